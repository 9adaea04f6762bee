package enginetest

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"signerd/hsm/hsmtest"
)

// NewNodeCAs makes n CAs that share one root and one issuing key, each in
// a token of its own, as the nodes of one CA hold them: the first is made
// as NewCA makes it, and the others are copies of its token folder taken
// before any engine ran on it, which is what a restored key backup gives
// (the same keys, and no audit key or anchor yet). The tokens are
// labelled "ca", "ca-2", "ca-3"… and have serials of their own, so each
// is opened as a token apart.
func NewNodeCAs(t testing.TB, n int) []*CA {
	t.Helper()
	first := NewCA(t)
	// SoftHSM2 finds the tokens of its folder when it is initialised, so
	// the copies are made with the module closed, and seen when it opens.
	if err := first.Module.Close(); err != nil {
		t.Fatal(err)
	}
	src, err := tokenFolder(first.Token)
	if err != nil {
		t.Fatal(err)
	}
	toks := []*hsmtest.Token{first.Token}
	for i := 2; i <= n; i++ {
		tok := *first.Token
		tok.Label = fmt.Sprintf("%s-%d", first.Token.Label, i)
		tok.Serial = fmt.Sprintf("%s%04d", first.Token.Serial[:len(first.Token.Serial)-4], i)
		copyToken(t, src, filepath.Join(first.Token.Dir, fmt.Sprintf("0c0c0c0c-0c0c-0c0c-0c0c-%012d", i)), first.Token, &tok)
		toks = append(toks, &tok)
	}
	cas := make([]*CA, n)
	for i, tok := range toks {
		m := tok.Open(t, tok.Config(hsmtest.SoftHSMProfile(t)))
		key, err := m.FindKey(context.Background(), IssuingLabel)
		if err != nil {
			t.Fatalf("token %s: %v", tok.Label, err)
		}
		cas[i] = &CA{Token: tok, Module: m, Root: first.Root, Cert: first.Cert, Signer: mustSigner(t, key), Issuer: MustIssuer(t, first.Cert, key)}
	}
	return cas
}

// tokenFolder is the folder of tok's files within its token folder: the
// one whose token.object holds its serial.
func tokenFolder(tok *hsmtest.Token) (string, error) {
	objs, err := filepath.Glob(filepath.Join(tok.Dir, "*", "token.object"))
	if err != nil {
		return "", err
	}
	for _, o := range objs {
		raw, err := os.ReadFile(o)
		if err != nil {
			return "", err
		}
		if bytes.Contains(raw, []byte(tok.Serial)) {
			return filepath.Dir(o), nil
		}
	}
	return "", fmt.Errorf("token %s (serial %s): no folder in %s", tok.Label, tok.Serial, tok.Dir)
}

// copyToken copies the token files in src to dst, relabelled as to.
// SoftHSM2 keeps the label (blank-padded to 32 bytes) and the serial (16
// bytes) in token.object as fixed-length byte strings, so each is replaced
// in place.
func copyToken(t testing.TB, src, dst string, from, to *hsmtest.Token) {
	t.Helper()
	if err := os.Mkdir(dst, 0o700); err != nil {
		t.Fatal(err)
	}
	files, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	pad := func(s string, n int) []byte { return []byte(s + strings.Repeat(" ", n-len(s))) }
	for _, f := range files {
		raw, err := os.ReadFile(filepath.Join(src, f.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if f.Name() == "token.object" {
			for _, r := range [][2][]byte{{pad(from.Label, 32), pad(to.Label, 32)}, {[]byte(from.Serial), []byte(to.Serial)}} {
				if bytes.Count(raw, r[0]) != 1 || len(r[0]) != len(r[1]) {
					t.Fatalf("token.object of %s: cannot replace %q with %q", from.Label, r[0], r[1])
				}
				raw = bytes.Replace(raw, r[0], r[1], 1)
			}
		}
		if err := os.WriteFile(filepath.Join(dst, f.Name()), raw, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// EditNodeAuditEvent rewrites the stored bytes of event seq of node's
// audit chain in the database, behind the stores' backs, as someone who
// can write the database would. Other nodes' stores may be open.
func (s *StoreAt) EditNodeAuditEvent(t testing.TB, node string, seq uint64, edit func([]byte) []byte) {
	t.Helper()
	if s.Engine != Postgres {
		t.Fatalf("node %s's chain: nodes share a PostgreSQL store only", node)
	}
	key := binary.BigEndian.AppendUint64([]byte("@"+node+"/"), seq)
	s.inDatabase(t, func(ctx context.Context, tx pgx.Tx) error {
		var v []byte
		if err := tx.QueryRow(ctx, "SELECT v FROM audit WHERE k = $1", key).Scan(&v); err != nil {
			return fmt.Errorf("node %s's event %d: %w", node, seq, err)
		}
		_, err := tx.Exec(ctx, "UPDATE audit SET v = $2 WHERE k = $1", key, edit(v))
		return err
	})
}

// Node is a place for node's store: the same database, opened as node.
func (s *StoreAt) Node(node string) *StoreAt {
	c := *s
	c.PostgresOptions.Node = node
	return &c
}
