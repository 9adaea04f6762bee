package ceremony_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/emmansun/gmsm/smx509"

	"signerd/ceremony"
	"signerd/engine/enginetest"
	"signerd/hsm"
	"signerd/hsm/hsmtest"
	"signerd/store"
)

// examples is the documented order of docs/ceremonies.
var examples = []string{
	"01-token-init.yaml", "02-root.yaml", "03-issuing-key.yaml", "04-issuing-cert.yaml",
	"05-root-crl.yaml", "06-backup.yaml", "07-token-init-standby.yaml", "08-restore.yaml",
	"09-rollover.yaml",
}

// room is a ceremony folder: the example files, the SO PIN and a
// custodian's passphrase, with a fresh SoftHSM2 token folder.
type room struct {
	dir string
}

func newRoom(t *testing.T) *room {
	t.Helper()
	hsmtest.NewDir(t)
	t.Setenv("SIGNERD_SOFTHSM_SM2", hsmtest.SM2Module(t))
	dir := t.TempDir()
	src := filepath.Join(hsmtest.RepoRoot(t), "docs/ceremonies")
	for _, name := range examples {
		data, err := os.ReadFile(filepath.Join(src, name))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for name, secret := range map[string]string{"so.pin": "so-secret-1234", "chen-jie.passphrase": "plum blossom in winter"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(secret+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return &room{dir: dir}
}

func (r *room) path(name string) string { return filepath.Join(r.dir, name) }

// run performs a ceremony file and returns its transcript.
func (r *room) run(t *testing.T, name string, dryRun bool) (string, error) {
	t.Helper()
	f, err := ceremony.Load(r.path(name))
	if err != nil {
		return "", err
	}
	var out bytes.Buffer
	err = f.Run(ceremony.Options{DryRun: dryRun, Out: &out})
	return out.String(), err
}

func (r *room) mustRun(t *testing.T, name string) string {
	t.Helper()
	out, err := r.run(t, name, false)
	if err != nil {
		t.Fatalf("%s: %v\n%s", name, err, out)
	}
	return out
}

// variant writes name with replacements applied (old, new, ...) as a new
// file and returns the new file's name.
func (r *room) variant(t *testing.T, name, as string, replacements ...string) string {
	t.Helper()
	data, err := os.ReadFile(r.path(name))
	if err != nil {
		t.Fatal(err)
	}
	s := string(data)
	for i := 0; i < len(replacements); i += 2 {
		if !strings.Contains(s, replacements[i]) {
			t.Fatalf("%s has no %q", name, replacements[i])
		}
		s = strings.ReplaceAll(s, replacements[i], replacements[i+1])
	}
	if err := os.WriteFile(r.path(as), []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
	return as
}

// tokens names the room's tokens and the shares that open them.
var tokens = map[string][]string{
	"ca":         {"pin-share-1.pem", "pin-share-2.pem", "pin-share-4.pem"},
	"ca-standby": {"standby-pin-share-1.pem", "standby-pin-share-3.pem"},
}

// open logs in to a room's token with custodians' shares.
func (r *room) open(t *testing.T, token string, shares ...string) (*hsm.Module, error) {
	t.Helper()
	spec := hsm.TokenSpec{Module: os.Getenv("SIGNERD_SOFTHSM_SM2"), Token: token}
	for _, s := range shares {
		spec.PINShares = append(spec.PINShares, r.path(s))
	}
	return spec.Open(1)
}

// state is what a dry run must leave as it was: the folder's files and
// every token's objects.
func (r *room) state(t *testing.T) string {
	t.Helper()
	var b strings.Builder
	entries, err := os.ReadDir(r.dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		info, _ := e.Info()
		b.WriteString(e.Name() + " " + info.ModTime().String() + "\n")
	}
	for _, token := range []string{"ca", "ca-standby"} {
		present, err := hsm.TokenPresent(os.Getenv("SIGNERD_SOFTHSM_SM2"), token)
		if err != nil {
			t.Fatal(err)
		}
		if !present {
			b.WriteString(token + ": absent\n")
			continue
		}
		m, err := r.open(t, token, tokens[token]...)
		if err != nil {
			t.Fatal(err)
		}
		objs, err := m.Objects(context.Background())
		m.Close()
		if err != nil {
			t.Fatal(err)
		}
		var labels []string
		for _, o := range objs {
			labels = append(labels, o.Label)
		}
		slices.Sort(labels) // the token's order is its own
		b.WriteString(token + ": " + strings.Join(labels, " ") + "\n")
	}
	return b.String()
}

func readCert(t *testing.T, path string) *smx509.Certificate {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	c, err := smx509.ParseCertificatePEM(data)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return c
}

func readPEM(t *testing.T, path string) []byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := pem.Decode(data)
	if b == nil {
		t.Fatalf("%s: not PEM", path)
	}
	return b.Bytes
}

func opensslVerify(t *testing.T, args ...string) {
	t.Helper()
	out, err := enginetest.OpenSSL(t, append([]string{"verify", "-vfyopt", enginetest.SM2ID}, args...)...)
	if err != nil || !strings.Contains(out, ": OK") {
		t.Fatalf("openssl verify %v: %v\n%s", args, err, out)
	}
}

// TestHierarchyFromExamples runs every documented example in order, each
// first as a dry run that must change nothing, and checks what they make
// with gmsm and with OpenSSL.
func TestHierarchyFromExamples(t *testing.T) {
	r := newRoom(t)
	for _, name := range examples {
		before := r.state(t)
		out, err := r.run(t, name, true)
		if err != nil {
			t.Fatalf("%s --dry-run: %v\n%s", name, err, out)
		}
		if !strings.Contains(out, "dry run: all checks passed") {
			t.Fatalf("%s --dry-run transcript:\n%s", name, out)
		}
		if after := r.state(t); after != before {
			t.Fatalf("%s --dry-run changed the room:\nbefore:\n%s\nafter:\n%s", name, before, after)
		}
		out = r.mustRun(t, name)
		if !strings.Contains(out, "ceremony complete") || !strings.Contains(out, "recorded in audit log") {
			t.Fatalf("%s transcript:\n%s", name, out)
		}
	}

	root := readCert(t, r.path("root-2026.pem"))
	issuing := readCert(t, r.path("issuing-2026.pem"))
	t.Run("root and issuing CA", func(t *testing.T) {
		if err := issuing.CheckSignatureFrom(root); err != nil {
			t.Fatal(err)
		}
		if !issuing.IsCA || issuing.MaxPathLen != 0 || !issuing.MaxPathLenZero || root.MaxPathLen != 1 {
			t.Fatalf("path lengths: root %d, issuing %d", root.MaxPathLen, issuing.MaxPathLen)
		}
		if issuing.KeyUsage != smx509.KeyUsageCertSign|smx509.KeyUsageCRLSign || issuing.SignatureAlgorithm != smx509.SM2WithSM3 {
			t.Fatalf("issuing CA: key usage %b, algorithm %v", issuing.KeyUsage, issuing.SignatureAlgorithm)
		}
		if issuing.Subject.CommonName != "Example SM2 Issuing CA 2026" || len(issuing.CRLDistributionPoints) != 1 {
			t.Fatalf("issuing CA subject %q, CDP %v", issuing.Subject, issuing.CRLDistributionPoints)
		}
		enginetest.OpenSSLVerifySigned(t, root, root.Raw)
		opensslVerify(t, "-CAfile", r.path("root-2026.pem"), r.path("issuing-2026.pem"))
	})
	t.Run("root CRL", func(t *testing.T) {
		der := readPEM(t, r.path("root-2026-crl-1.pem"))
		crl, err := smx509.ParseRevocationList(der)
		if err != nil {
			t.Fatal(err)
		}
		if err := crl.CheckSignatureFrom(root); err != nil || crl.Number.Int64() != 1 {
			t.Fatalf("CRL number %v: %v", crl.Number, err)
		}
		enginetest.OpenSSLVerifySigned(t, root, der)
	})
	t.Run("restore", func(t *testing.T) {
		m, err := r.open(t, "ca-standby", tokens["ca-standby"]...)
		if err != nil {
			t.Fatal(err)
		}
		defer m.Close()
		k, err := m.FindKey(context.Background(), "issuing-2026")
		if err != nil {
			t.Fatal(err)
		}
		if !k.Public.Equal(issuing.PublicKey) {
			t.Fatal("the restored key is not the issuing CA's")
		}
		// The restored key signs a certificate that verifies under the
		// issuing CA's certificate from the primary site.
		s, err := k.SM2Signer(nil)
		if err != nil {
			t.Fatal(err)
		}
		_, csr := enginetest.NewCSR(t)
		req, _ := smx509.ParseCertificateRequest(csr)
		leaf := &smx509.Certificate{SerialNumber: issuing.SerialNumber, Subject: req.Subject,
			NotBefore: issuing.NotBefore, NotAfter: issuing.NotBefore.AddDate(1, 0, 0)}
		der, err := smx509.CreateCertificate(nil, leaf, issuing, req.PublicKey, s)
		if err != nil {
			t.Fatal(err)
		}
		c, _ := smx509.ParseCertificate(der)
		if err := c.CheckSignatureFrom(issuing); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("rollover", func(t *testing.T) {
		newRoot := readCert(t, r.path("root-2031.pem"))
		nwo := readCert(t, r.path("root-2031-signed-by-2026.pem"))
		own := readCert(t, r.path("root-2026-signed-by-2031.pem"))
		if !bytes.Equal(newRoot.RawSubject, root.RawSubject) || newRoot.PublicKey.(*ecdsa.PublicKey).Equal(root.PublicKey) {
			t.Fatal("the new root must keep the old name and have a new key")
		}
		for _, link := range []struct {
			c, issuer *smx509.Certificate
			key       any
		}{{nwo, root, newRoot.PublicKey}, {own, newRoot, root.PublicKey}} {
			if err := link.c.CheckSignatureFrom(link.issuer); err != nil {
				t.Fatal(err)
			}
			if !link.c.PublicKey.(*ecdsa.PublicKey).Equal(link.key) || !bytes.Equal(link.c.AuthorityKeyId, link.issuer.SubjectKeyId) {
				t.Fatal("link certificate certifies the wrong key or names the wrong issuer key")
			}
		}
		enginetest.OpenSSLVerifySigned(t, newRoot, newRoot.Raw)
		opensslVerify(t, "-CAfile", r.path("root-2026.pem"), r.path("root-2031-signed-by-2026.pem"))
		opensslVerify(t, "-CAfile", r.path("root-2031.pem"), r.path("root-2026-signed-by-2031.pem"))
	})
	t.Run("audit log", func(t *testing.T) {
		st, err := store.Open(r.path("ceremonies.db"))
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		var actions []string
		err = st.View(func(tx *store.Tx) error {
			if err := tx.VerifyAuditChain(); err != nil {
				return err
			}
			return tx.Events(0, func(e store.Event, _ []byte) error {
				if e.Outcome != store.OutcomeOK || e.Actor.Operator == "" || !strings.Contains(e.Detail, "ceremony complete") {
					t.Errorf("event %d: %+v", e.Seq, e)
				}
				actions = append(actions, e.Action)
				return nil
			})
		})
		if err != nil {
			t.Fatal(err)
		}
		want := []string{"ceremony.token-init", "ceremony.root", "ceremony.issuing-key", "ceremony.issuing-cert",
			"ceremony.root-crl", "ceremony.backup", "ceremony.token-init", "ceremony.restore", "ceremony.rollover"}
		if !slices.Equal(actions, want) {
			t.Fatalf("audit actions %v, want %v", actions, want)
		}
	})
	t.Run("PIN shares", func(t *testing.T) {
		all := []string{"pin-share-1.pem", "pin-share-2.pem", "pin-share-3.pem", "pin-share-4.pem"} // 5 is sealed
		for i := range all {
			for j := i + 1; j < len(all); j++ {
				for k := j + 1; k < len(all); k++ {
					m, err := r.open(t, "ca", all[i], all[j], all[k])
					if err != nil {
						t.Fatalf("shares %s %s %s: %v", all[i], all[j], all[k], err)
					}
					m.Close()
				}
			}
		}
		if _, err := r.open(t, "ca", "pin-share-1.pem", "pin-share-3.pem"); err == nil || !strings.Contains(err.Error(), "3 are needed") {
			t.Fatalf("two shares: %v", err)
		}
		if _, err := r.open(t, "ca", "pin-share-1.pem", "standby-pin-share-1.pem", "pin-share-3.pem"); err == nil || !strings.Contains(err.Error(), "another split") {
			t.Fatalf("a share of another token's PIN: %v", err)
		}
		if _, err := r.open(t, "ca", "pin-share-1.pem", "kek-share-1.pem", "pin-share-3.pem"); err == nil || !strings.Contains(err.Error(), "key-backup-kek") {
			t.Fatalf("a KEK share for the PIN: %v", err)
		}
	})
	t.Run("root CRL revoking the issuing CA", func(t *testing.T) {
		name := r.variant(t, "05-root-crl.yaml", "crl-2.yaml", "number: 1", "number: 2",
			"revoked: []", "revoked: [{certificate: issuing-2026.pem, revoked_at: 2026-11-19T08:00:00Z, reason: keyCompromise}]",
			"crl: root-2026-crl-1.pem", "crl: root-2026-crl-2.pem")
		r.mustRun(t, name)
		der := readPEM(t, r.path("root-2026-crl-2.pem"))
		crl, err := smx509.ParseRevocationList(der)
		if err != nil {
			t.Fatal(err)
		}
		if len(crl.RevokedCertificateEntries) != 1 {
			t.Fatalf("%d entries", len(crl.RevokedCertificateEntries))
		}
		e := crl.RevokedCertificateEntries[0]
		if e.SerialNumber.Cmp(issuing.SerialNumber) != 0 || e.ReasonCode != 1 || crl.Number.Int64() != 2 {
			t.Fatalf("entry %X reason %d, CRL number %v", e.SerialNumber, e.ReasonCode, crl.Number)
		}
		enginetest.OpenSSLVerifySigned(t, root, der)
		text, err := enginetest.OpenSSL(t, "crl", "-in", r.path("root-2026-crl-2.pem"), "-noout", "-text")
		if err != nil || !strings.Contains(text, strings.ToUpper(issuing.SerialNumber.Text(16))) || !strings.Contains(text, "Key Compromise") {
			t.Fatalf("openssl crl -text: %v\n%s", err, text)
		}
	})
	t.Run("ECDSA root", func(t *testing.T) {
		name := r.variant(t, "02-root.yaml", "ecdsa-root.yaml", "algorithm: sm2", "algorithm: ecdsa-p256",
			"label: root-2026", "label: ecdsa-root", "root-2026.p", "ecdsa-root.p")
		r.mustRun(t, name)
		c := readCert(t, r.path("ecdsa-root.pem"))
		if c.SignatureAlgorithm != smx509.ECDSAWithSHA256 {
			t.Fatalf("signature algorithm %v", c.SignatureAlgorithm)
		}
		out, err := enginetest.OpenSSL(t, "verify", "-check_ss_sig", "-CAfile", r.path("ecdsa-root.pem"), r.path("ecdsa-root.pem"))
		if err != nil || !strings.Contains(out, ": OK") {
			t.Fatalf("openssl verify: %v\n%s", err, out)
		}
	})
	t.Run("refusals", func(t *testing.T) { refusals(t, r) })
}

// refusals runs ceremonies that must fail, after the hierarchy exists.
func refusals(t *testing.T, r *room) {
	flipped := r.path("flipped.backup.pem")
	data, _ := os.ReadFile(r.path("issuing-2026.backup.pem"))
	b, _ := pem.Decode(data)
	b.Bytes[len(b.Bytes)/2] ^= 1
	os.WriteFile(flipped, pem.EncodeToMemory(b), 0o644)

	for _, tc := range []struct {
		name string
		file func(t *testing.T) string
		want string
	}{
		{"outputs exist", func(t *testing.T) string { return "02-root.yaml" }, "exists"},
		{"label reuse", func(t *testing.T) string {
			return r.variant(t, "02-root.yaml", "x-root.yaml", "root-2026.p", "x-root-2026.p")
		}, "already holds an object labelled \"root-2026\""},
		{"signing key is not the issuer's", func(t *testing.T) string {
			return r.variant(t, "04-issuing-cert.yaml", "x-issuing.yaml", "signing_key: root-2026", "signing_key: issuing-2026",
				"certificate: issuing-2026.pem", "certificate: x-issuing.pem")
		}, "is not the key of certificate"},
		{"backup of another key", func(t *testing.T) string {
			return r.variant(t, "06-backup.yaml", "x-backup.yaml", "public_key: issuing-2026.pem", "public_key: root-2026.pem",
				"kek-share-", "x-kek-share-", "backup: issuing-2026.backup.pem", "backup: x.backup.pem")
		}, "not the key given in public_key"},
		{"backup of a key not made for it", func(t *testing.T) string {
			return r.variant(t, "06-backup.yaml", "x-backup2.yaml", "public_key: issuing-2026.pem", "public_key: root-2026.pem",
				"\nkey: issuing-2026", "\nkey: root-2026",
				"kek-share-", "x2-kek-share-", "backup: issuing-2026.backup.pem", "backup: x2.backup.pem")
		}, "not extractable under a trusted KEK"},
		{"validity outside the issuer's", func(t *testing.T) string {
			return r.variant(t, "04-issuing-cert.yaml", "x-validity.yaml", "not_after: 2036-11-01T00:00:00Z", "not_after: 2047-01-01T00:00:00Z",
				"certificate: issuing-2026.pem", "certificate: x-validity.pem")
		}, "not inside the issuer's"},
		{"CRL outside the issuer's validity", func(t *testing.T) string {
			return r.variant(t, "05-root-crl.yaml", "x-crl.yaml", "next_update: 2027-11-20T00:00:00Z", "next_update: 2047-11-20T00:00:00Z",
				"crl: root-2026-crl-1.pem", "crl: x-crl.pem")
		}, "not inside the issuer's"},
		{"CRL revoking without a reason", func(t *testing.T) string {
			return r.variant(t, "05-root-crl.yaml", "x-crl2.yaml", "revoked: []", "revoked: [{certificate: issuing-2026.pem, revoked_at: 2026-11-19T00:00:00Z}]",
				"number: 1", "number: 2", "crl: root-2026-crl-1.pem", "crl: x-crl2.pem")
		}, "reason is required"},
		{"CRL revoking a non-CA", func(t *testing.T) string {
			return r.variant(t, "05-root-crl.yaml", "x-crl3.yaml", "revoked: []", "revoked: [{certificate: root-2026-signed-by-2031.pem, revoked_at: 2026-11-19T00:00:00Z, reason: superseded}]",
				"number: 1", "number: 2", "crl: root-2026-crl-1.pem", "crl: x-crl3.pem")
		}, "not issued by this root"},
		{"restore with m-1 shares", func(t *testing.T) string {
			return r.variant(t, "08-restore.yaml", "x-restore.yaml", "kek-share-2.pem, kek-share-3.pem, kek-share-4.pem", "kek-share-2.pem, kek-share-3.pem",
				"restored-issuing-2026", "x-restored")
		}, "3 are needed"},
		{"restore of a flipped byte", func(t *testing.T) string {
			return r.variant(t, "08-restore.yaml", "x-restore2.yaml", "backup: issuing-2026.backup.pem", "backup: flipped.backup.pem",
				"restored-issuing-2026", "x-restored2")
		}, "fails its MAC"},
		{"restore with a wrong share", func(t *testing.T) string {
			return r.variant(t, "08-restore.yaml", "x-restore3.yaml", "kek-share-2.pem,", "pin-share-2.pem,", "restored-issuing-2026", "x-restored3")
		}, "token-user-pin"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			file := tc.file(t)
			out, err := r.run(t, file, false)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("%s: error %v, want one containing %q\n%s", file, err, tc.want, out)
			}
		})
	}

	for _, tc := range []struct{ name, yaml, want string }{
		{"unknown key", "typo: 1\n", "field typo not found"},
		{"second document", "---\ntype: root\n", "trailing content"},
		{"unknown type", "", "is not one of"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data, _ := os.ReadFile(r.path("02-root.yaml"))
			s := string(data) + tc.yaml
			if tc.name == "unknown type" {
				s = strings.Replace(s, "type: root", "type: roots", 1)
			}
			path := r.path("bad.yaml")
			os.WriteFile(path, []byte(s), 0o644)
			if _, err := ceremony.Load(path); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Load: %v, want %q", err, tc.want)
			}
		})
	}
	// Failed ceremonies are on the record too.
	st, err := store.Open(r.path("ceremonies.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	failed := 0
	st.View(func(tx *store.Tx) error {
		return tx.Events(0, func(e store.Event, _ []byte) error {
			if e.Outcome == store.OutcomeFailed && strings.Contains(e.Detail, "FAILED") && e.Reason != "" {
				failed++
			}
			return nil
		})
	})
	if failed == 0 {
		t.Fatal("no failed ceremony in the audit log")
	}
	if _, err := os.Stat(r.path("x-issuing.pem")); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("a failed ceremony wrote its output")
	}
}
