package engine_test

import (
	"os"
	"testing"

	"signerd/engine/enginetest"
	"signerd/store/pgtest"
)

// TestMain stops the PostgreSQL servers the tests started.
func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// onEachStore runs test once on each store engine, as a subtest named
// after the engine.
func onEachStore(t *testing.T, test func(t *testing.T, se enginetest.StoreEngine)) {
	t.Helper()
	for _, se := range enginetest.Stores {
		t.Run(se.Name, func(t *testing.T) { test(t, se) })
	}
}
