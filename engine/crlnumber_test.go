package engine_test

import (
	"context"
	"math"
	"math/big"
	"strings"
	"testing"
	"time"

	"signerd/api"
	"signerd/engine"
	"signerd/engine/enginetest"
	"signerd/store"
)

// TestCRLNumbersIncreaseAcrossClockReset: CRLs signed while the clock ran
// 100 days ahead carry numbers from that time; after the clock is
// corrected and the reset acknowledged, the next CRL's number is still
// larger (the store's last number covers what the time no longer does),
// and then the numbers keep increasing. Numbered by the time alone, the
// CRL after the reset would go back 100 days.
func TestCRLNumbersIncreaseAcrossClockReset(t *testing.T) {
	onEachStore(t, testCRLNumbersIncreaseAcrossClockReset)
}

func testCRLNumbersIncreaseAcrossClockReset(t *testing.T, se enginetest.StoreEngine) {
	ca := enginetest.NewCA(t)
	st := se.Open(t)
	clk, base := clockNow()
	e := ca.Engine(t, st, engine.Config{Now: clk.read})
	var numbers []*big.Int
	sign := func(what string) {
		t.Helper()
		crl := checkCRL(t, ca, mustCRL(t, e))
		for _, n := range numbers {
			if crl.Number.Cmp(n) <= 0 {
				t.Fatalf("%s: CRL number %v, not above %v signed before", what, crl.Number, n)
			}
		}
		numbers = append(numbers, crl.Number)
	}
	sign("on time")
	clk.set(base.AddDate(0, 0, 100))
	sign("clock 100 days ahead")
	sign("clock 100 days ahead, same second")
	e.Close()

	clk.set(base.Add(time.Minute))
	e = ca.Engine(t, st, engine.Config{Now: clk.read, AcknowledgeClockReset: "test: clock ran ahead"})
	sign("after the acknowledged reset")
	clk.set(base.Add(2 * time.Minute))
	sign("a minute later")
}

// TestCRLNumberNeverWraps: a store edited to hold the largest CRL number
// is refused rather than signed from: the number after it would wrap to 0
// and the one after that go back to the time. Nothing is used up.
func TestCRLNumberNeverWraps(t *testing.T) { onEachStore(t, testCRLNumberNeverWraps) }

func testCRLNumberNeverWraps(t *testing.T, se enginetest.StoreEngine) {
	ca := enginetest.NewCA(t)
	st := se.Open(t)
	e := ca.Engine(t, st, engine.Config{})
	iss, err := e.Issuer("")
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Update(func(tx *store.Tx) error {
		return tx.PutCRLState(iss.ID(), store.CRLState{Next: math.MaxUint64})
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.SignCRL(context.Background(), ra, engine.CRLName{}); err == nil || engine.CodeOf(err) != api.CodeInternal || !strings.Contains(err.Error(), "no larger number") {
		t.Fatalf("CRL from a store at the largest number: %v, want %s naming why", err, api.CodeInternal)
	}
	if err := st.View(func(tx *store.Tx) error {
		s, err := tx.CRLState(iss.ID())
		if err == nil && s.Next != math.MaxUint64 {
			t.Errorf("refused CRL left next number %d", s.Next)
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
}
