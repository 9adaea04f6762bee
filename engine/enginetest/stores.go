package enginetest

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	bolt "go.etcd.io/bbolt"

	"signerd/store"
	"signerd/store/pgtest"
)

// Store engines, as StoreAt.Engine names them.
const (
	Bolt     = "bolt"
	Postgres = "postgres"
)

// StoreEngine is one engine the store runs on, for tests that run once on
// each (t.Run(se.Name, ...)).
type StoreEngine struct {
	Name string
	// New makes a place for a new, empty store on the engine and opens
	// nothing: a file in a temporary folder, or a new database holding the
	// current schema on the test binary's shared PostgreSQL server.
	New func(t testing.TB) *StoreAt
}

// Open opens a new, empty store on the engine, closed when the test ends.
func (se StoreEngine) Open(t testing.TB) *store.Store {
	t.Helper()
	return se.New(t).Open(t)
}

// The store engines. A package whose tests use PostgresStore must run
// them through pgtest.Main (see pgtest.Shared).
var (
	BoltStore     = StoreEngine{Name: Bolt, New: NewBoltStore}
	PostgresStore = StoreEngine{Name: Postgres, New: NewPostgresStore}
	// Stores are the engines the store runs on.
	Stores = []StoreEngine{BoltStore, PostgresStore}
)

// StoreAt is where a store lives: a bbolt file, or a PostgreSQL database.
// A test opens the store there, closes it and opens it again as signerd
// restarts, or has another process open it (String, OpenStoreAt).
type StoreAt struct {
	Engine string
	// Path is the bbolt file.
	Path string
	// DSN names the PostgreSQL database, and Server is the server that
	// holds it.
	DSN    string
	Server *pgtest.Server
	// PostgresOptions are what Open opens a PostgreSQL store with.
	PostgresOptions store.PostgresOptions
}

// NewBoltStore is a place for a bbolt store in a temporary folder.
func NewBoltStore(t testing.TB) *StoreAt {
	t.Helper()
	return &StoreAt{Engine: Bolt, Path: filepath.Join(t.TempDir(), "signerd.db")}
}

// NewPostgresStore is a new database holding the current schema on the
// test binary's shared PostgreSQL server.
func NewPostgresStore(t testing.TB) *StoreAt {
	t.Helper()
	return NewPostgresStoreOn(t, pgtest.Shared(t))
}

// NewPostgresStoreOn is a new database holding the current schema on srv:
// a server of the test's own (pgtest.Start) that it may stop, kill or
// restart.
func NewPostgresStoreOn(t testing.TB, srv *pgtest.Server) *StoreAt {
	t.Helper()
	dsn := srv.CreateDatabase(t)
	if _, err := store.UpgradePostgres(context.Background(), dsn); err != nil {
		t.Fatal(err)
	}
	return &StoreAt{Engine: Postgres, DSN: dsn, Server: srv}
}

// Open opens the store, closed when the test ends (closing it earlier is
// fine).
func (s *StoreAt) Open(t testing.TB) *store.Store {
	t.Helper()
	st, err := s.TryOpen()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// TryOpen opens the store and returns what the open returns; the caller
// closes it.
func (s *StoreAt) TryOpen() (*store.Store, error) {
	switch s.Engine {
	case Bolt:
		return store.Open(s.Path)
	case Postgres:
		return store.OpenPostgres(s.DSN, s.PostgresOptions)
	}
	return nil, fmt.Errorf("open store: unknown engine %q", s.Engine)
}

// String is the place as OpenStoreAt reads it: "bolt:PATH" or
// "postgres:DSN".
func (s *StoreAt) String() string {
	if s.Engine == Bolt {
		return Bolt + ":" + s.Path
	}
	return s.Engine + ":" + s.DSN
}

// OpenStoreAt opens the store at where (StoreAt.String), for a child
// process that acts as signerd on its parent's store.
func OpenStoreAt(where string) (*store.Store, error) {
	engine, at, ok := strings.Cut(where, ":")
	if !ok {
		return nil, fmt.Errorf("store place %q: want bolt:PATH or postgres:DSN", where)
	}
	s := &StoreAt{Engine: engine}
	if engine == Bolt {
		s.Path = at
	} else {
		s.DSN = at
	}
	return s.TryOpen()
}

// CutAuditLog cuts the store's audit log back to the seal seq as someone
// who can write the file or the database would (see CutAuditLog). The
// store must be closed.
func (s *StoreAt) CutAuditLog(t testing.TB, seq uint64) {
	t.Helper()
	if s.Engine == Bolt {
		CutAuditLog(t, s.Path, seq)
		return
	}
	s.inDatabase(t, func(ctx context.Context, tx pgx.Tx) error {
		key := binary.BigEndian.AppendUint64(nil, seq)
		var stored []byte
		if err := tx.QueryRow(ctx, "SELECT v FROM audit WHERE k = $1", key).Scan(&stored); err != nil {
			return fmt.Errorf("event %d: %w", seq, err)
		}
		if _, err := tx.Exec(ctx, "DELETE FROM audit WHERE k > $1", key); err != nil {
			return err
		}
		head, _ := json.Marshal(map[string]any{"seq": seq, "hash": store.ChainHash(stored)})
		for k, v := range map[string][]byte{"audit-head": head, "audit-last-seal": key} {
			if _, err := tx.Exec(ctx, "UPDATE meta SET v = $2 WHERE k = $1", []byte(k), v); err != nil {
				return err
			}
		}
		return nil
	})
}

// EditAuditEvent rewrites the stored bytes of audit event seq behind the
// store's back. The store must be closed.
func (s *StoreAt) EditAuditEvent(t testing.TB, seq uint64, edit func([]byte) []byte) {
	t.Helper()
	key := binary.BigEndian.AppendUint64(nil, seq)
	if s.Engine == Bolt {
		s.inFile(t, func(tx *bolt.Tx) error {
			b := tx.Bucket([]byte("audit"))
			v := b.Get(key)
			if v == nil {
				return fmt.Errorf("no event %d", seq)
			}
			return b.Put(key, edit(append([]byte(nil), v...)))
		})
		return
	}
	s.inDatabase(t, func(ctx context.Context, tx pgx.Tx) error {
		var v []byte
		if err := tx.QueryRow(ctx, "SELECT v FROM audit WHERE k = $1", key).Scan(&v); err != nil {
			return fmt.Errorf("event %d: %w", seq, err)
		}
		_, err := tx.Exec(ctx, "UPDATE audit SET v = $2 WHERE k = $1", key, edit(v))
		return err
	})
}

// DropTable empties table (as backend.go names it, e.g.
// "compromised-keys") behind the store's back, as a store written before
// the table existed would hold it. The store must be closed.
func (s *StoreAt) DropTable(t testing.TB, table string) {
	t.Helper()
	if s.Engine == Bolt {
		s.inFile(t, func(tx *bolt.Tx) error {
			if tx.Bucket([]byte(table)) == nil {
				return nil
			}
			return tx.DeleteBucket([]byte(table))
		})
		return
	}
	s.inDatabase(t, func(ctx context.Context, tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "DELETE FROM "+pgx.Identifier{strings.ReplaceAll(table, "-", "_")}.Sanitize()); err != nil {
			return err
		}
		// A store written before an index existed has no mark saying it
		// is whole either (a bbolt file without the bucket loses the mark
		// at open): its mark is meta's "compromised-keys-at-head".
		_, err := tx.Exec(ctx, "DELETE FROM meta WHERE k = $1", []byte(table+"-at-head"))
		return err
	})
}

var copies atomic.Int64

// Copy is a copy of the store as it is now, somewhere else: a copy of the
// file, or a database made from this one as its template (CREATE DATABASE
// … TEMPLATE, which PostgreSQL copies only while nobody is connected to
// it). The store must be closed.
func (s *StoreAt) Copy(t testing.TB) *StoreAt {
	t.Helper()
	c := *s
	if s.Engine == Bolt {
		c.Path = filepath.Join(t.TempDir(), "copy.db")
		copyFile(t, s.Path, c.Path)
		return &c
	}
	name := fmt.Sprintf("%s_copy_%d", pgtest.DatabaseName(t, s.DSN), copies.Add(1))
	s.Server.Exec(t, "postgres", fmt.Sprintf("CREATE DATABASE %s TEMPLATE %s",
		pgx.Identifier{name}.Sanitize(), pgx.Identifier{pgtest.DatabaseName(t, s.DSN)}.Sanitize()))
	c.DSN = s.Server.DSN(name)
	return &c
}

// RestoreFrom puts the copy from back in the store's place, as an
// operator restoring a backup would. The store must be closed.
func (s *StoreAt) RestoreFrom(t testing.TB, from *StoreAt) {
	t.Helper()
	if s.Engine == Bolt {
		copyFile(t, from.Path, s.Path)
		return
	}
	name := pgx.Identifier{pgtest.DatabaseName(t, s.DSN)}.Sanitize()
	s.Server.Exec(t, "postgres", "DROP DATABASE "+name+" WITH (FORCE)")
	s.Server.Exec(t, "postgres", fmt.Sprintf("CREATE DATABASE %s TEMPLATE %s",
		name, pgx.Identifier{pgtest.DatabaseName(t, from.DSN)}.Sanitize()))
}

// inFile runs fn in a write transaction on the bbolt file.
func (s *StoreAt) inFile(t testing.TB, fn func(*bolt.Tx) error) {
	t.Helper()
	db, err := bolt.Open(s.Path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Update(fn); err != nil {
		t.Fatalf("edit store %s: %v", s.Path, err)
	}
}

// inDatabase runs fn in a transaction on the store's database, outside
// the store.
func (s *StoreAt) inDatabase(t testing.TB, fn func(context.Context, pgx.Tx) error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, s.DSN)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error { return fn(ctx, tx) }); err != nil {
		t.Fatalf("edit store database %s: %v", pgtest.DatabaseName(t, s.DSN), err)
	}
}

func copyFile(t testing.TB, from, to string) {
	t.Helper()
	src, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := os.Create(to)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		dst.Close()
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
}
