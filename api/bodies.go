package api

import (
	"time"

	"signerd/revocation"
)

// Subject is the subject DN the RA vetted. It replaces whatever the CSR
// says: the CA certifies what the RA checked, not what the applicant typed.
//
// The engine takes it as is (engine.Subject) and binds a request id to its
// JSON (the request's content digest, kept in the store): its fields, their
// names and their order never change.
type Subject struct {
	CommonName         string   `json:"CN,omitempty"`
	Organization       string   `json:"O,omitempty"`
	OrganizationalUnit []string `json:"OU,omitempty"`
	Country            string   `json:"C,omitempty"`
	Province           string   `json:"ST,omitempty"`
	Locality           string   `json:"L,omitempty"`
	SerialNumber       string   `json:"serialNumber,omitempty"`
}

// IssueRequest is the body of issue and renew. Its fields stand in the
// order of their JSON names, the order a client has always sent them in.
type IssueRequest struct {
	CSR          string            `json:"csr,omitempty"` // PEM CERTIFICATE REQUEST
	DNSNames     []string          `json:"dns_names,omitempty"`
	Emails       []string          `json:"emails,omitempty"`
	Identity     map[string]string `json:"identity,omitempty"` // GM/T 0015 numbers by kind
	Profile      string            `json:"profile"`
	PublicKey    string            `json:"public_key,omitempty"` // PEM PUBLIC KEY, from the KMC
	RequestID    string            `json:"request_id"`
	Subject      Subject           `json:"subject"`
	ValidityDays int               `json:"validity_days,omitempty"` // 0: the profile's maximum
}

// PEM block types of IssueRequest.CSR and IssueRequest.PublicKey.
const (
	PEMCSR       = "CERTIFICATE REQUEST"
	PEMPublicKey = "PUBLIC KEY"
)

// ExtendRequest is the body of extend.
type ExtendRequest struct {
	RequestID    string `json:"request_id"`
	ValidityDays int    `json:"validity_days"` // 0: the profile's maximum
}

// RevokeRequest is the body of revoke.
type RevokeRequest struct {
	Reason string `json:"reason"` // an RFC 5280 name; empty is unspecified
}

// RevocationReason is the reason q names, or a bad_request Error if it
// names none a certificate may be revoked for (certificateHold is hold's,
// removeFromCRL is not ours).
func (q RevokeRequest) RevocationReason() (revocation.Reason, error) {
	if q.Reason == "" {
		return revocation.Unspecified, nil
	}
	r, err := revocation.Parse(q.Reason)
	if err != nil {
		return 0, &Error{Code: CodeBadRequest, Message: err.Error()}
	}
	return r, nil
}

// ExportRequest is the body of an audit export; a zero time leaves that
// end open, and no body at all exports the whole log.
type ExportRequest struct {
	Since time.Time `json:"since,omitzero"`
	Until time.Time `json:"until,omitzero"`
}

// Certificate is a certificate answer: 201 for a new certificate (issue,
// renew, extend), 200 otherwise.
type Certificate struct {
	Serial       string            `json:"serial"` // hex
	Status       string            `json:"status"` // good, on-hold, revoked, superseded
	Profile      string            `json:"profile"`
	Subject      string            `json:"subject"`
	Issuer       string            `json:"issuer"`
	NotBefore    time.Time         `json:"not_before"`
	NotAfter     time.Time         `json:"not_after"`
	RevokedAt    *time.Time        `json:"revoked_at,omitempty"`
	Reason       revocation.Reason `json:"reason,omitempty"` // by number, as on the CRL
	RequestID    string            `json:"request_id"`
	Replaces     string            `json:"replaces,omitempty"`
	SupersededBy string            `json:"superseded_by,omitempty"`
	Certificate  string            `json:"certificate"` // PEM
}

// Statistics is a month's answer: certificates issued and revoked, by
// profile and then by "issued" and "revoked".
type Statistics struct {
	Month    string                       `json:"month"` // YYYY-MM, Beijing time
	Profiles map[string]map[string]uint64 `json:"profiles"`
}

// Health statuses.
const (
	HealthOK       = "ok"
	HealthDegraded = "degraded"
)

// Health is the health answer: 200 with status ok while signerd can sign
// and record, 503 with status degraded and an error's code and message
// otherwise. Its fields stand in the order of their JSON names, as the
// answer has always had them.
type Health struct {
	Code Code `json:"code,omitempty"`
	// CRLFailing are the CRL series whose scheduled signing or
	// publication fails now (each retried).
	CRLFailing []CRLFailure `json:"crl_failing,omitempty"`
	HSM        HSMHealth    `json:"hsm"`
	Message    string       `json:"message,omitempty"`
	QueueDepth int          `json:"queue_depth"`
	Status     string       `json:"status"`
	Store      StoreHealth  `json:"store"`
}

// CRLFailure is a CRL series whose scheduled signing fails: which
// (issuer, shard, delta), since when, how many attempts, the last error,
// and when relying parties' copy of its latest CRL expires.
type CRLFailure struct {
	Attempts int       `json:"attempts"`
	Delta    bool      `json:"delta,omitempty"`
	Error    string    `json:"error"`
	Expires  time.Time `json:"expires,omitzero"`
	Issuer   string    `json:"issuer"`
	// Publishing: the CRL is signed and served; writing it into the
	// publication directory fails.
	Publishing bool      `json:"publishing,omitempty"`
	Shard      int       `json:"shard"`
	Since      time.Time `json:"since"`
}

// HSMHealth is whether the HSM signs, since when and, while it does not,
// why.
type HSMHealth struct {
	Error string    `json:"error,omitempty"`
	Since time.Time `json:"since,omitzero"`
	Up    bool      `json:"up"`
}

// StoreHealth is whether the store takes writes, since when and, while it
// does not, why.
type StoreHealth struct {
	Error    string    `json:"error,omitempty"`
	Since    time.Time `json:"since,omitzero"`
	Writable bool      `json:"writable"`
}

// Headers of a store backup answer: what the copy is, for the client to
// check the file it wrote against.
const (
	HeaderBackupSHA256    = "Signerd-Backup-Sha256"     // hex SHA-256 of the copy
	HeaderBackupAuditHead = "Signerd-Backup-Audit-Head" // the copy's last audit event
	HeaderBackupLastSeal  = "Signerd-Backup-Last-Seal"  // the copy's last seal
)
