package main

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"signerd/store"
	"signerd/store/pgtest"
)

// storeFile writes a store file through the store API: two certificates,
// the second revoked, their requests and serials, and an audit event for
// each change. It returns the closed file's path and its audit head.
func storeFile(t *testing.T) (string, uint64) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "signerd.db")
	s, err := store.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	now := time.Now().UTC()
	for _, serial := range []byte{1, 2} {
		id := fmt.Sprintf("r-%d", serial)
		err := s.Update(func(tx *store.Tx) error {
			if err := tx.ReserveSerial([]byte{serial}, id); err != nil {
				return err
			}
			c := &store.Certificate{Serial: []byte{serial}, DER: []byte{0x30, serial}, Issuer: "ab", RequestID: id,
				Status: store.StatusGood, NotBefore: now, NotAfter: now.Add(time.Hour)}
			if err := tx.PutCertificate(c); err != nil {
				return err
			}
			if err := tx.SetSerialState([]byte{serial}, store.SerialIssued); err != nil {
				return err
			}
			if err := tx.PutRequest(&store.Request{ID: id, State: store.RequestIssued, Serial: []byte{serial}}); err != nil {
				return err
			}
			_, err := tx.Append(store.Event{Actor: store.System, Action: "certificate.issue", Object: store.HexSerial(c.Serial), Outcome: store.OutcomeOK})
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	var head uint64
	err = s.Update(func(tx *store.Tx) error {
		c, err := tx.Certificate([]byte{2})
		if err != nil {
			return err
		}
		c.Status, c.RevokedAt, c.Reason = store.StatusRevoked, now, 1
		if err := tx.PutCertificate(c); err != nil {
			return err
		}
		e, err := tx.Append(store.Event{Actor: store.System, Action: "certificate.revoke", Object: "02", Outcome: store.OutcomeOK})
		head = e.Seq
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return path, head
}

// TestStorePostgresCommands runs signerctl store upgrade, migrate and
// verify --dsn against a real PostgreSQL, in the order an operator would,
// with the refusals on the way.
func TestStorePostgresCommands(t *testing.T) {
	server := pgtest.Shared(t)
	dsn := server.CreateDatabase(t)
	path, head := storeFile(t)

	steps := []struct {
		name     string
		before   func(t *testing.T) // run before the command, e.g. to hold the file open
		args     []string
		wantCode int
		want     []string // in stdout and stderr together
	}{
		{"migrate before the schema exists", nil, []string{"store", "migrate", "--from", path, "--dsn", dsn},
			1, []string{"holds no signerd schema: create it with signerctl store upgrade --dsn DSN"}},
		{"upgrade", nil, []string{"store", "upgrade", "--dsn", dsn},
			0, []string{"applied version 1: the tables of signerd's records", "applied version 2: views of several nodes",
				"applied version 3: the CRL shards' objects and change log",
				"applied version 4: the pre-signed OCSP responses and their due times", "schema now at version 4"}},
		{"upgrade again", nil, []string{"store", "upgrade", "--dsn", dsn},
			0, []string{"schema current at version 4"}},
		{"migrate while the file is in use", func(t *testing.T) {
			s, err := store.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
		}, []string{"store", "migrate", "--from", path, "--dsn", dsn},
			1, []string{"in use by another process: stop signerd first"}},
		{"migrate", nil, []string{"store", "migrate", "--from", path, "--dsn", dsn},
			0, []string{"migrated " + path + " to postgres@", "certificates              2 records  SHA-256 ",
				fmt.Sprintf("audit head: event %d", head), "the audit chain verifies on the database"}},
		{"migrate again", nil, []string{"store", "migrate", "--from", path, "--dsn", dsn},
			1, []string{"the database is not empty (meta: ", "certificates: 2 records"}},
		{"verify", nil, []string{"store", "verify", "--dsn", dsn},
			0, []string{"schema 4, 2 certificates, 2 serials, 2 requests, 1 revoked, 3 audit events", "\nOK\n"}},
		{"verify after a revoked index row is deleted", func(t *testing.T) {
			server.Exec(t, dsn, `DELETE FROM revoked`)
		}, []string{"store", "verify", "--dsn", dsn},
			1, []string{`FAIL bucket "revoked", serial 02: certificate is revoked but not in the index`, "1 findings"}},
		{"a DSN with a password", nil, []string{"store", "upgrade", "--dsn", dsn + " password=s3cret"},
			1, []string{"the DSN carries a password", "passfile=FILE"}},
		{"a URL with a password", nil, []string{"store", "verify", "--dsn", "postgres://signerd:s3cret@localhost/signerd"},
			1, []string{"the DSN carries a password"}},
		{"verify a file and a DSN", nil, []string{"store", "verify", "--dsn", dsn, path},
			2, []string{"one FILE or --dsn DSN, not both"}},
	}
	for _, step := range steps {
		ok := t.Run(step.name, func(t *testing.T) {
			if step.before != nil {
				step.before(t)
			}
			stdout, stderr, code := signerctl(t, "", step.args...)
			out := stdout + stderr
			if code != step.wantCode {
				t.Fatalf("exit %d, want %d:\n%s", code, step.wantCode, out)
			}
			for _, w := range step.want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
			if strings.Contains(out, "s3cret") {
				t.Errorf("the output shows the password:\n%s", out)
			}
		})
		if !ok {
			break // each step needs the ones before
		}
	}
}
