package crl_test

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/emmansun/gmsm/smx509"

	"signerd/crl"
	"signerd/hsm"
	"signerd/issuance"
	"signerd/revocation"
)

const shards = 4

// interopCA is a software issuer behind the one issuance path: its CRLs
// are built, linted, signed and checked as signerd's are.
type interopCA struct {
	iss    *issuance.Issuer
	signer issuance.Signer
	dir    string
}

func newInteropCA(t *testing.T, alg hsm.Algorithm) *interopCA {
	t.Helper()
	signer, err := issuance.Throwaway(alg)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().Truncate(time.Second)
	tmpl := &smx509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "interop CA " + alg.String(), Country: []string{"CN"}},
		NotBefore: now.Add(-time.Hour), NotAfter: now.AddDate(5, 0, 0), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: smx509.KeyUsageCertSign | smx509.KeyUsageCRLSign, SubjectKeyId: []byte{0xca, 0xfe, byte(alg)}}
	cert := createCert(t, tmpl, tmpl, signer.Public(), signer)
	iss, err := issuance.NewIssuer(cert, signer)
	if err != nil {
		t.Fatal(err)
	}
	ca := &interopCA{iss: iss, signer: signer, dir: t.TempDir()}
	ca.write(t, "ca.pem", "CERTIFICATE", cert.Raw)
	return ca
}

func createCert(t *testing.T, tmpl, parent *smx509.Certificate, pub crypto.PublicKey, signer crypto.Signer) *smx509.Certificate {
	t.Helper()
	der, err := smx509.CreateCertificate(rand.Reader, tmpl, parent, pub, signer)
	if err != nil {
		t.Fatal(err)
	}
	c, err := smx509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func (ca *interopCA) write(t *testing.T, name, typ string, der []byte) string {
	t.Helper()
	path := filepath.Join(ca.dir, name)
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// sign has the CRL s with entries (in any order) issued.
func (ca *interopCA) sign(t *testing.T, s crl.Scope, entries []crl.Entry) []byte {
	t.Helper()
	slices.SortFunc(entries, func(a, b crl.Entry) int { return strings.Compare(string(a.Serial), string(b.Serial)) })
	b, err := ca.iss.NewCRL(s)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if err := b.Add(e); err != nil {
			t.Fatal(err)
		}
	}
	tok, err := ca.iss.PrepareCRL(b)
	if err != nil {
		t.Fatal(err)
	}
	out, err := ca.iss.SignAndIssue(context.Background(), tok)
	if err != nil {
		t.Fatal(err)
	}
	return out.DER
}

// serialIn draws a NewSerial-shaped serial in shard k.
func serialIn(k int) []byte {
	s := make([]byte, 16)
	for {
		rand.Read(s)
		if s[0] &= 0x7f; s[0] != 0 && crl.Shard(s, shards) == k {
			return s
		}
	}
}

func openssl(t *testing.T, args ...string) (string, error) {
	t.Helper()
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Skip("openssl not installed")
	}
	out, err := exec.Command("openssl", args...).CombinedOutput()
	return string(out), err
}

// OpenSSL reads a shard's SM2 complete CRL and its delta as partitioned
// and delta CRLs, and accepts their signatures.
func TestOpenSSLReadsSM2ShardAndDelta(t *testing.T) {
	ca := newInteropCA(t, hsm.SM2)
	const k = 2
	template := "http://crl.example.cn/sm2/{shard}.crl"
	idp, freshest := crl.URL(template, k), "http://crl.example.cn/sm2/2-delta.crl"
	now := time.Now()
	var entries []crl.Entry
	for range 20 {
		entries = append(entries, crl.Entry{Serial: serialIn(k), RevokedAt: now.Add(-time.Hour), Reason: revocation.KeyCompromise})
	}
	base := ca.sign(t, crl.Scope{Number: 10, ThisUpdate: now, NextUpdate: now.Add(24 * time.Hour), IDP: idp, Freshest: freshest}, entries)
	delta := ca.sign(t, crl.Scope{Number: 11, ThisUpdate: now, NextUpdate: now.Add(time.Hour), IDP: idp, DeltaOf: 10}, []crl.Entry{
		{Serial: serialIn(k), RevokedAt: now, Reason: revocation.Superseded},
		{Serial: entries[0].Serial, RevokedAt: now, Reason: revocation.RemoveFromCRL},
	})
	for _, tc := range []struct {
		name string
		der  []byte
		want []string
	}{
		{"complete", base, []string{"X509v3 Issuing Distribution Point: critical", "URI:" + idp, "Only User Certificates",
			"X509v3 Freshest CRL", "URI:" + freshest, "X509v3 CRL Number", "Key Compromise"}},
		{"delta", delta, []string{"X509v3 Issuing Distribution Point: critical", "URI:" + idp,
			"X509v3 Delta CRL Indicator: critical", "Remove From CRL", "Superseded"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(ca.dir, tc.name+".der")
			os.WriteFile(path, tc.der, 0o600)
			out, err := openssl(t, "crl", "-inform", "DER", "-in", path, "-text", "-noout")
			if err != nil {
				t.Fatalf("openssl crl: %v\n%s", err, out)
			}
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("openssl crl -text lacks %q:\n%s", w, out)
				}
			}
			if tc.name == "delta" && strings.Contains(out, "Freshest") {
				t.Errorf("the delta names a Freshest CRL:\n%s", out)
			}
			out2, err := exec.Command("../testdata/openssl-sm2-verify.sh", path, filepath.Join(ca.dir, "ca.pem")).CombinedOutput()
			if err != nil || !strings.Contains(string(out2), "Signature Verified Successfully") {
				t.Fatalf("openssl-sm2-verify.sh: %v\n%s", err, out2)
			}
		})
	}
}

// OpenSSL's path validation takes an ECDSA shard's CRL and delta (the
// structure is the SM2 one's; OpenSSL checks SM2 CRL signatures in a path
// only with the ID dance) for certificates whose CRL distribution point
// names the shard: a good one passes, one revoked in the delta fails, and
// one of another shard is refused: the CRL's scope (IDP) is not its CDP.
func TestOpenSSLVerifiesWithShardAndDelta(t *testing.T) {
	ca := newInteropCA(t, hsm.ECDSAP256)
	const k = 1
	template := "http://crl.example.cn/ec/{shard}.crl"
	now := time.Now()
	leaf := func(name string, serial []byte, shard int) string {
		key, err := issuance.Throwaway(hsm.ECDSAP256)
		if err != nil {
			t.Fatal(err)
		}
		tmpl := &smx509.Certificate{SerialNumber: new(big.Int).SetBytes(serial), Subject: pkix.Name{CommonName: name},
			NotBefore: now.Add(-time.Minute), NotAfter: now.AddDate(1, 0, 0), KeyUsage: smx509.KeyUsageDigitalSignature,
			BasicConstraintsValid: true, CRLDistributionPoints: []string{crl.URL(template, shard)}}
		c := createCert(t, tmpl, ca.iss.Cert, key.Public(), ca.signer)
		return ca.write(t, name+".pem", "CERTIFICATE", c.Raw)
	}
	good, revokedSerial := leaf("good", serialIn(k), k), serialIn(k)
	revoked := leaf("revoked", revokedSerial, k)
	elsewhere := leaf("elsewhere", serialIn(k+1), k+1)

	idp := crl.URL(template, k)
	base := ca.sign(t, crl.Scope{Number: 10, ThisUpdate: now, NextUpdate: now.Add(24 * time.Hour), IDP: idp, Freshest: idp + ".delta"},
		[]crl.Entry{{Serial: serialIn(k), RevokedAt: now.Add(-time.Hour), Reason: revocation.KeyCompromise}})
	delta := ca.sign(t, crl.Scope{Number: 11, ThisUpdate: now, NextUpdate: now.Add(time.Hour), IDP: idp, DeltaOf: 10},
		[]crl.Entry{{Serial: revokedSerial, RevokedAt: now, Reason: revocation.KeyCompromise}})
	basePath, deltaPath := ca.write(t, "base.pem", "X509 CRL", base), ca.write(t, "delta.pem", "X509 CRL", delta)

	verify := func(cert string, crls ...string) string {
		args := []string{"verify", "-crl_check", "-use_deltas", "-CAfile", filepath.Join(ca.dir, "ca.pem")}
		for _, c := range crls {
			args = append(args, "-CRLfile", c)
		}
		out, _ := openssl(t, append(args, cert)...)
		return out
	}
	for _, tc := range []struct {
		name, cert string
		crls       []string
		want       string
	}{
		{"good certificate", good, []string{basePath, deltaPath}, ": OK"},
		{"revoked in the delta", revoked, []string{basePath, deltaPath}, "certificate revoked"},
		{"revoked, but no delta given", revoked, []string{basePath}, ": OK"},
		{"another shard's certificate", elsewhere, []string{basePath, deltaPath}, "different CRL scope"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if out := verify(tc.cert, tc.crls...); !strings.Contains(out, tc.want) {
				t.Fatalf("openssl verify: want %q:\n%s", tc.want, out)
			}
		})
	}
}
