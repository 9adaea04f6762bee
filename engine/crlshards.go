package engine

import (
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"sync/atomic"

	"signerd/crl"
	"signerd/store"
)

// CRLShards is how an issuing key's certificates are split among CRLs
// (RFC 5280 partitioned CRLs, as Let's Encrypt's crl-updater shards
// them): a certificate's shard follows from its serial (crl.Shard), its
// CRL distribution point names its shard's URL, and each shard's CRL
// names the same URL in a critical Issuing Distribution Point. The zero
// value is one unpartitioned CRL whose URL the profiles name.
type CRLShards struct {
	// Count is how many shards (default 1).
	Count int
	// URL is the shard's distribution point, "{shard}" standing for its
	// number; required with more than one shard.
	URL string
	// DeltaURL is where a shard's delta CRL is published, named as the
	// Freshest CRL of certificates whose profile asks for it.
	DeltaURL string
}

func (s CRLShards) count() int { return max(s.Count, 1) }

// Validate refuses a layout no CRL could be signed for.
func (s CRLShards) Validate() error {
	if s.Count < 0 || s.Count > crl.MaxShards {
		return fmt.Errorf("%d shards: between 1 and %d", s.Count, crl.MaxShards)
	}
	if s.URL == "" {
		if s.count() > 1 {
			return fmt.Errorf("%d shards but no URL: each shard's certificates must name its CRL", s.Count)
		}
		if s.DeltaURL != "" {
			return errors.New("a delta URL without a shard URL: a delta CRL names its base's distribution point")
		}
		return nil
	}
	if err := crl.ValidateTemplate(s.URL, s.count()); err != nil {
		return fmt.Errorf("url: %w", err)
	}
	if s.DeltaURL != "" {
		if err := crl.ValidateTemplate(s.DeltaURL, s.count()); err != nil {
			return fmt.Errorf("delta url: %w", err)
		}
	}
	return nil
}

// layout is how the store records s.
func (s CRLShards) layout() store.CRLLayout {
	return store.CRLLayout{Shards: s.count(), URL: s.URL, DeltaURL: s.DeltaURL}
}

// idp is the Issuing Distribution Point of shard k's CRLs ("" for an
// unpartitioned CRL, which carries none).
func (s CRLShards) idp(k int) string {
	if s.URL == "" {
		return ""
	}
	return crl.URL(s.URL, k)
}

// oidFreshestCRL is RFC 5280 §4.2.1.15's Freshest CRL extension.
var oidFreshestCRL = asn1.ObjectIdentifier{2, 5, 29, 46}

// distributionPoint is what a certificate with serial says of its CRLs:
// its shard's URL, and, if freshest, the Freshest CRL extension naming
// its shard's delta. Nothing when the issuer's CRLs are not partitioned
// (the profile's distribution points apply).
func (s CRLShards) distributionPoint(serial []byte, freshest bool) ([]string, []pkix.Extension, error) {
	if s.URL == "" {
		return nil, nil, nil
	}
	k := crl.Shard(serial, s.count())
	if !freshest || s.DeltaURL == "" {
		return []string{crl.URL(s.URL, k)}, nil, nil
	}
	// FreshestCRL ::= CRLDistributionPoints: a DistributionPoint whose
	// fullName is one URI.
	type distributionPointName struct {
		FullName []asn1.RawValue `asn1:"optional,tag:0"`
	}
	type distributionPoint struct {
		DistributionPoint distributionPointName `asn1:"optional,tag:0"`
	}
	uri := asn1.RawValue{Tag: 6, Class: asn1.ClassContextSpecific, Bytes: []byte(crl.URL(s.DeltaURL, k))}
	der, err := asn1.Marshal([]distributionPoint{{distributionPointName{[]asn1.RawValue{uri}}}})
	if err != nil {
		return nil, nil, fmt.Errorf("freshest CRL extension: %w", err)
	}
	return []string{crl.URL(s.URL, k)}, []pkix.Extension{{Id: oidFreshestCRL, Value: der}}, nil
}

// crlLayouts are the issuers' shard layouts, checked against what the
// store recorded: once a certificate of an issuer exists, the URLs it
// names are fixed, so its layout is too.
type crlLayouts struct {
	of map[string]CRLShards
	// pinned: the active issuer's layout is recorded as fixed (a
	// certificate of it exists), so a batch need not record it again.
	pinned atomic.Bool
}

// shards is issuer's layout.
func (l *crlLayouts) shards(issuer string) CRLShards { return l.of[issuer] }

// check compares each issuer's configured layout with the store's, in tx:
// a layout recorded as fixed must be the configured one, an issuer with
// certificates from before layouts were recorded has one unpartitioned
// CRL, and an issuer with no certificate takes the configured layout.
func (l *crlLayouts) check(tx *store.Tx, issuers []string) error {
	for _, id := range issuers {
		want := l.of[id].layout()
		got, ok, err := tx.CRLLayout(id)
		if err != nil {
			return err
		}
		if !ok {
			has, err := tx.HasCertificateOf(id)
			if err != nil {
				return err
			}
			got = store.CRLLayout{Shards: 1, Pinned: has}
		}
		if got.Pinned && (got.Shards != want.Shards || got.URL != want.URL || got.DeltaURL != want.DeltaURL) {
			return fmt.Errorf("issuer %s: its certificates name CRLs of %s, the configuration says %s: "+
				"a layout is fixed once certificates exist (they point to their shard's URL); "+
				"restore the configuration, or issue from a new issuing key", id, describeLayout(got), describeLayout(want))
		}
		want.Pinned = got.Pinned
		if !ok || got != want {
			if err := tx.PutCRLLayout(id, want); err != nil {
				return err
			}
		}
	}
	return nil
}

// pin records in tx that a certificate of issuer exists, once.
func (l *crlLayouts) pin(tx *store.Tx, issuer string) error {
	if l.pinned.Load() {
		return nil
	}
	got, _, err := tx.CRLLayout(issuer)
	if err != nil {
		return err
	}
	want := l.of[issuer].layout()
	want.Pinned = got.Pinned
	if got != want {
		// Another node, configured otherwise, recorded its layout since
		// this one started: their certificates would name different CRLs.
		return fmt.Errorf("issuer %s: the store records CRLs of %s, this node is configured for %s: "+
			"every node must be configured alike", issuer, describeLayout(got), describeLayout(want))
	}
	if !got.Pinned {
		want.Pinned = true
		return tx.PutCRLLayout(issuer, want)
	}
	return nil
}

// pinCommitted notes that the pin is in the store.
func (l *crlLayouts) pinCommitted() { l.pinned.Store(true) }

func describeLayout(l store.CRLLayout) string {
	s := fmt.Sprintf("%d shard(s)", l.Shards)
	if l.URL != "" {
		s += " at " + l.URL
	} else {
		s += " (one unpartitioned CRL)"
	}
	if l.DeltaURL != "" {
		s += ", deltas at " + l.DeltaURL
	}
	return s
}
