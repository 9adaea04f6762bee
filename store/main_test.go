package store

import (
	"os"
	"testing"

	"signerd/store/pgtest"
)

// TestMain stops the PostgreSQL servers the tests started.
func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }
