package main

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/emmansun/gmsm/sm2"

	"signerd/api"
	"signerd/engine"
	"signerd/engine/enginetest"
)

// signRADated is signRA with the Signerd-Date given.
func signRADated(t *testing.T, key *sm2.PrivateKey, serial, method, path, body string, date time.Time) capturedRequest {
	t.Helper()
	c := signRA(t, key, serial, method, path, body)
	stamp, nonce := date.UTC().Format(time.RFC3339Nano), newNonce(t)
	sig, err := key.SignMessage(rand.Reader, api.SignedText(method, path, stamp, nonce, serial, []byte(body)), sm2.DefaultSM2SignerOpts)
	if err != nil {
		t.Fatal(err)
	}
	c.header.Set(api.HeaderDate, stamp)
	c.header.Set(api.HeaderNonce, nonce)
	c.header.Set(api.HeaderSignature, base64.StdEncoding.EncodeToString(sig))
	return c
}

// TestRogueRACannotLockOutOtherRAs: an RA that overflows its replay memory
// with requests dated near +max_skew raises only its own floor. Another
// RA's fresh request, and its revocation of the rogue's certificate, are
// answered as if the flood had not happened.
func TestRogueRACannotLockOutOtherRAs(t *testing.T) {
	const memory = 16
	d := newDaemonProc(t, "")
	d.start(t)
	rogue := d.issueFor(t, "ra-rogue", "ra-sign")
	honest := d.issueFor(t, "ra-honest", "ra-sign")
	d.restartWith(t, fmt.Sprintf("ra_signatures: {required: true, replay_memory: %d}\n", memory))
	want(t, "honest RA before the flood", d.sendFresh(t, honest, "GET", "/v1/certificates/7e7e"), http.StatusNotFound, "not_found")

	ahead := time.Now().Add(5*time.Minute - 10*time.Second)
	for i := 0; i < 2*memory; i++ {
		date := ahead.Add(time.Duration(i) * time.Millisecond)
		want(t, fmt.Sprintf("rogue request %d dated %s", i, date.Format(time.RFC3339Nano)),
			d.send(t, signRADated(t, rogue.key, rogue.serials[0], "GET", "/v1/certificates/7e7e", "", date)), http.StatusNotFound, "not_found")
	}
	// What the rogue's memory forgot, its floor refuses: its own.
	want(t, "rogue's own fresh request after its flood", d.send(t, signRA(t, rogue.key, rogue.serials[0], "GET", "/v1/certificates/7e7e", "")),
		http.StatusUnauthorized, string(api.CodeReplayed))

	want(t, "honest RA's fresh request after the flood", d.send(t, signRA(t, honest.key, honest.serials[0], "GET", "/v1/certificates/7e7e", "")),
		http.StatusNotFound, "not_found")
	r := d.send(t, signRA(t, honest.key, honest.serials[0], "POST", "/v1/certificates/"+rogue.serials[0]+"/revoke", `{"reason":"keyCompromise"}`))
	want(t, "honest RA revokes the rogue", r, http.StatusOK, "")
	want(t, "the rogue after its revocation", d.send(t, signRA(t, rogue.key, rogue.serials[0], "GET", "/v1/certificates/7e7e", "")),
		http.StatusUnauthorized, string(api.CodeRACertificate))
}

// TestReplayGuardKeepsRAsApart drives the guard over a real engine and
// store: one RA filling its memory with requests dated ahead, or many RAs
// filling the table of RAs, never turns another RA's fresh request into a
// replay, and nothing any RA's memory forgot is accepted again.
func TestReplayGuardKeepsRAsApart(t *testing.T) {
	ca := enginetest.NewCA(t)
	eng := ca.Engine(t, enginetest.OpenStore(t), engine.Config{})
	const skew = 5 * time.Minute
	now := time.Now()
	isReplay := func(err error) bool {
		var se *sigError
		return errors.As(err, &se) && se.code == api.CodeReplayed
	}
	g := newReplayGuard(8, 4)
	honest, rogue := []byte{0x0a}, []byte{0x0b}
	if err := g.admit(eng, honest, "honest-nonce-000000", now, now, skew); err != nil {
		t.Fatal(err)
	}
	ahead := now.Add(skew - time.Second)
	for i := 0; i <= 3*8; i++ {
		if err := g.admit(eng, rogue, fmt.Sprintf("rogue-nonce-%08d", i), ahead.Add(time.Duration(i)*time.Millisecond), now, skew); err != nil {
			t.Fatalf("rogue %d: %v", i, err)
		}
	}
	if err := g.admit(eng, rogue, "rogue-nonce-00000000", ahead, now, skew); !isReplay(err) {
		t.Fatalf("the rogue's first request, forgotten for room: %v", err)
	}
	if err := g.admit(eng, rogue, "rogue-nonce-fresh000", now.Add(time.Second), now.Add(time.Second), skew); !isReplay(err) {
		t.Fatalf("the rogue's fresh request under its own floor: %v", err)
	}
	if err := g.admit(eng, honest, "honest-nonce-000001", now.Add(time.Second), now.Add(time.Second), skew); err != nil {
		t.Fatalf("honest RA's fresh request after the rogue's flood: %v", err)
	}
	if err := g.admit(eng, honest, "honest-nonce-000000", now, now.Add(time.Second), skew); !isReplay(err) {
		t.Fatalf("honest RA's first request again: %v", err)
	}
	// More RAs than the table holds: the least recently accepted go
	// idle, their floors raised to what they keep.
	for i := 0; i < 8; i++ {
		if err := g.admit(eng, []byte{0x20, byte(i)}, "many-ras-nonce-0000", now.Add(2*time.Second), now.Add(2*time.Second), skew); err != nil {
			t.Fatalf("RA %d: %v", i, err)
		}
	}
	if n := len(g.ras); n > 4 {
		t.Fatalf("%d RAs remembered, want at most 4", n)
	}
	if err := g.admit(eng, honest, "honest-nonce-000001", now.Add(time.Second), now.Add(3*time.Second), skew); !isReplay(err) {
		t.Fatalf("honest RA's request replayed after it left the table: %v", err)
	}
	if err := g.admit(eng, []byte{0x20, 0}, "many-ras-nonce-0000", now.Add(2*time.Second), now.Add(3*time.Second), skew); !isReplay(err) {
		t.Fatalf("an evicted RA's request replayed: %v", err)
	}
}
