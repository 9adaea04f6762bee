package ocsp_test

import (
	"testing"
	"time"

	"github.com/emmansun/gmsm/smx509"

	"signerd/hsm"
	"signerd/lint"
	"signerd/ocsp"
)

// BenchmarkBuildLintAssemble is signerd's own work per SM2 response, the
// HSM's signature and Issue's verification of it apart: build the
// ResponseData, lint it, assemble the response and lint it again, as a
// delegated responder signs it.
func BenchmarkBuildLintAssemble(b *testing.B) {
	p := newPKI(b, hsm.SM2)
	ca, responder := p.ca.Cert, p.responder.Cert
	alg, err := ocsp.AlgorithmIdentifier(smx509.SM2WithSM3)
	if err != nil {
		b.Fatal(err)
	}
	sig := make([]byte, 72) // an SM2 signature's size; the lints do not verify it
	sig[0], sig[1] = 0x30, 70
	now := time.Now()
	s := ocsp.Single{Serial: p.leaf.SerialNumber.Bytes(), Status: ocsp.Good, ThisUpdate: now, NextUpdate: now.Add(96 * time.Hour)}
	pub := p.responder.Signer.Public()
	b.ReportAllocs()
	for b.Loop() {
		tbs, err := ocsp.ResponseTBS(pub, ca, s, now, ocsp.SM3)
		if err != nil {
			b.Fatal(err)
		}
		if err := lint.OCSPResponseTBS(tbs, responder, ca); err != nil {
			b.Fatal(err)
		}
		der, err := ocsp.Assemble(tbs, alg, sig, [][]byte{responder.Raw})
		if err != nil {
			b.Fatal(err)
		}
		if err := lint.OCSPResponse(der, responder, ca); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPrepareSignIssue is the whole path with a software SM2 key:
// Prepare, the signature, and Issue's verification, assembly and lints.
// The signature stands in for the HSM's; the rest is signerd's CPU.
func BenchmarkPrepareSignIssue(b *testing.B) {
	p := newPKI(b, hsm.SM2)
	now := time.Now()
	s := ocsp.Single{Serial: p.leaf.SerialNumber.Bytes(), Status: ocsp.Good, ThisUpdate: now, NextUpdate: now.Add(96 * time.Hour)}
	b.ReportAllocs()
	for b.Loop() {
		tok, err := p.responder.PrepareOCSP(s, now, ocsp.SM3)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := p.responder.SignAndIssue(b.Context(), tok); err != nil {
			b.Fatal(err)
		}
	}
}
