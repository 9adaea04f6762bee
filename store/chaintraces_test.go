package store

import (
	"slices"
	"testing"
)

// TestChainTraces: a chain is listed from any trace the store holds of
// it, its head record, its node's claim or its events, so that deleting
// one kind of record does not take it out of the list; a key under '@'
// that is no chain's is passed over.
func TestChainTraces(t *testing.T) {
	dsn := newPostgresDatabase(t)
	a, b, c := openNode(t, dsn, "a"), openNode(t, dsn, "b"), openNode(t, dsn, "c")
	appendEvents(t, a, 3, "by.a")
	appendEvents(t, b, 600, "by.b") // more than one page of a PostgreSQL scan
	d := openNode(t, dsn, "d")
	appendEvents(t, d, 2, "by.d")
	// Closed, so that no renewal writes d's claim again once deleted.
	c.Close()
	d.Close()
	if err := a.b.update(func(r records) error {
		for _, k := range []string{"audit-head@b", "audit-head@d", "node@d"} {
			if err := r.delete(tableMeta, []byte(k)); err != nil {
				return err
			}
		}
		return r.put(tableAudit, []byte("@-x/12345678"), []byte("{}"))
	}); err != nil {
		t.Fatal(err)
	}

	bolt := openTemp(t)
	appendEvents(t, bolt, 2, "unnamed")

	tests := []struct {
		name string
		s    *Store
		want []ChainTrace
	}{
		{"nodes", a, []ChainTrace{{Node: "a", Head: true, Claim: true, Events: true}, {Node: "b", Claim: true, Events: true},
			{Node: "c", Claim: true}, {Node: "d", Events: true}}},
		{"the unnamed chain", bolt, []ChainTrace{{Node: "", Head: true, Events: true}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			view(t, tt.s, func(tx *Tx) error {
				got, err := tx.ChainTraces()
				if err != nil {
					return err
				}
				if !slices.Equal(got, tt.want) {
					t.Errorf("traces %+v, want %+v", got, tt.want)
				}
				return nil
			})
		})
	}
}
