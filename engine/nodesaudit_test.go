package engine_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/emmansun/gmsm/smx509"
	"github.com/jackc/pgx/v5"

	"signerd/audit"
	"signerd/engine"
	"signerd/engine/enginetest"
	"signerd/hsm"
	"signerd/issuance"
)

// deleteRecords deletes, behind the stores' backs, the meta records keys
// and every audit event whose key starts with one of eventPrefixes, as
// someone who can write the database would.
func deleteRecords(t *testing.T, dsn string, keys []string, eventPrefixes ...string) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	for _, k := range keys {
		tag, err := conn.Exec(ctx, "DELETE FROM meta WHERE k = $1", []byte(k))
		if err != nil || tag.RowsAffected() != 1 {
			t.Fatalf("delete meta %q: %d rows, %v", k, tag.RowsAffected(), err)
		}
	}
	for _, p := range eventPrefixes {
		// Node names hold no '/': "@b0" is the least key after "@b/…".
		hi := append([]byte(strings.TrimSuffix(p, "/")), '0')
		tag, err := conn.Exec(ctx, "DELETE FROM audit WHERE k >= $1 AND k < $2", []byte(p), hi)
		if err != nil || tag.RowsAffected() == 0 {
			t.Fatalf("delete events %q: %d rows, %v", p, tag.RowsAffected(), err)
		}
	}
}

// TestAuditExportOfAChainWithRecordsRemoved: nodes a and b issue and
// seal; b stops; records of b's chain are deleted from the database; a
// exports. Whatever is left of b's chain in the store (events without a
// head, or only b's name claim), the bundle lists b's chain; a bundle
// listing b's chain as not included for any reason but "never sealed"
// fails verification. With every record of b's gone the bundle cannot
// tell, and only the auditor's expected set of nodes fails it.
func TestAuditExportOfAChainWithRecordsRemoved(t *testing.T) {
	tests := []struct {
		name     string
		meta     []string // meta records of b deleted
		events   bool     // b's events deleted
		listed   string   // in the reason b's chain is not included ("": b has a section; "-": b is not listed)
		ok       bool     // the bundle verifies OK without expected nodes
		okWithAB bool     // and with nodes a and b expected
	}{
		{"nothing removed", nil, false, "", true, true},
		{"b's head record", []string{"audit-head@b"}, false, `"audit-head@b" deleted?`, false, false},
		{"b's head, last seal and events; its claim left", []string{"audit-head@b", "audit-last-seal@b"}, true, "none of its 0 events", true, true},
		{"every record of b's chain and its claim", []string{"audit-head@b", "audit-last-seal@b", "node@b"}, true, "-", true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cas := enginetest.NewNodeCAs(t, 2)
			db := enginetest.NewPostgresStore(t)
			cfg := func(ca *enginetest.CA) engine.Config {
				return engine.Config{AuditKey: auditKey(t, ca), SealEvery: 4, SealInterval: time.Hour}
			}
			stA, stB := db.Node("a").Open(t), db.Node("b").Open(t)
			ea, eb := cas[0].Engine(t, stA, cfg(cas[0])), cas[1].Engine(t, stB, cfg(cas[1]))
			for i := range 4 {
				issue(t, ea, request(t, fmt.Sprintf("a-%d", i)))
				issue(t, eb, request(t, fmt.Sprintf("b-%d", i)))
			}
			waitSealed(t, stB)
			eb.Close()
			stB.Close()
			var prefixes []string
			if tt.events {
				prefixes = append(prefixes, "@b/")
			}
			deleteRecords(t, db.DSN, tt.meta, prefixes...)

			var buf bytes.Buffer
			x, err := ea.ExportAudit(context.Background(), auditor, time.Time{}, time.Time{}, &buf)
			if err != nil {
				t.Fatal(err)
			}
			rep := audit.Verify(buf.Bytes(), audit.Options{Root: cas[0].Root})
			var got string
			switch {
			case len(rep.Sections) == 2 && rep.Sections[1].Node == "b":
			case len(rep.Omitted) == 1 && rep.Omitted[0].Node == "b":
				got = rep.Omitted[0].Omitted
			default:
				got = "-"
			}
			if (tt.listed == "") != (got == "") || !strings.Contains(got, tt.listed) {
				t.Fatalf("b's chain: not included %q, want %q (sections %d, export %+v)", got, tt.listed, len(rep.Sections), x.Chains)
			}
			if rep.OK() != tt.ok {
				t.Fatalf("verifies OK %v, want %v: %v", rep.OK(), tt.ok, rep.Problems)
			}
			withAB := audit.Verify(buf.Bytes(), audit.Options{Root: cas[0].Root, Nodes: []string{"a", "b"}})
			if withAB.OK() != tt.okWithAB {
				t.Fatalf("with nodes a and b expected, verifies OK %v, want %v: %v", withAB.OK(), tt.okWithAB, withAB.Problems)
			}
			for _, p := range append(rep.Problems, withAB.Problems...) {
				if p.Node != "b" {
					t.Fatalf("problem %q names %q, not node b", p, p.Node)
				}
			}
		})
	}
}

// TestAuditKeysNameTheirNodes: each node's audit key certificate names
// its node, and an export carries, for each chain, the certificate naming
// that chain's node. A node whose HSM holds another node's audit key (a
// copied token) is refused at start, naming the node, and its refused
// start leaves nothing that fails the next export. A signerd without a
// node name that becomes node a on the same HSM gets a second
// certificate, naming a, and the export of the unnamed chain and a's
// verifies.
func TestAuditKeysNameTheirNodes(t *testing.T) {
	t.Run("two nodes", func(t *testing.T) {
		cas := enginetest.NewNodeCAs(t, 2)
		db := enginetest.NewPostgresStore(t)
		keyA := auditKey(t, cas[0])
		stA, stB := db.Node("a").Open(t), db.Node("b").Open(t)
		ea := cas[0].Engine(t, stA, engine.Config{AuditKey: keyA, SealEvery: 4, SealInterval: time.Hour})
		eb := cas[1].Engine(t, stB, engine.Config{AuditKey: auditKey(t, cas[1]), SealEvery: 4, SealInterval: time.Hour})
		for i := range 4 {
			issue(t, eb, request(t, fmt.Sprintf("b-%d", i)))
		}
		waitSealed(t, stB)

		// Node c on a token holding a's audit key.
		_, err := engine.New(engine.Config{Store: db.Node("c").Open(t), Issuers: []*issuance.Issuer{cas[0].Issuer},
			Random: cas[0].Module.Random(), AuditKey: keyA, SealEvery: 4, SealInterval: time.Hour})
		if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("(CKA_ID %X) is node a's", hsm.KeyID(keyA.Public().(*ecdsa.PublicKey)))) {
			t.Fatalf("node c with node a's audit key: %v", err)
		}

		var buf bytes.Buffer
		if _, err := ea.ExportAudit(context.Background(), auditor, time.Time{}, time.Time{}, &buf); err != nil {
			t.Fatal(err)
		}
		rep := audit.Verify(buf.Bytes(), audit.Options{Root: cas[0].Root, Nodes: []string{"a", "b", "c"}})
		if !rep.OK() || len(rep.Sections) != 2 || len(rep.Omitted) != 1 || rep.Omitted[0].Node != "c" {
			t.Fatalf("export: ok %v, %d sections, omitted %+v: %v", rep.OK(), len(rep.Sections), rep.Omitted, rep.Problems)
		}
		for _, s := range rep.Sections {
			for _, k := range s.Header.Keys {
				cert, err := smx509.ParseCertificate(k.Certificate)
				if err != nil {
					t.Fatal(err)
				}
				node, err := audit.KeyNode(cert)
				if err != nil || (node != s.Node && node != "a") {
					t.Fatalf("%s's section certifies %q (node %q, %v)", audit.ChainName(s.Node), cert.Subject.CommonName, node, err)
				}
			}
		}
	})

	t.Run("the unnamed node becomes node a", func(t *testing.T) {
		ca := enginetest.NewCA(t)
		db := enginetest.NewPostgresStore(t)
		key := auditKey(t, ca)
		cfg := engine.Config{AuditKey: key, SealEvery: 4, SealInterval: time.Hour}
		st := db.Open(t)
		e := ca.Engine(t, st, cfg)
		for i := range 4 {
			issue(t, e, request(t, fmt.Sprintf("unnamed-%d", i)))
		}
		e.Close()
		st.Close()

		stA := db.Node("a").Open(t)
		ea := ca.Engine(t, stA, cfg)
		issue(t, ea, request(t, "a-0"))
		var buf bytes.Buffer
		if _, err := ea.ExportAudit(context.Background(), auditor, time.Time{}, time.Time{}, &buf); err != nil {
			t.Fatal(err)
		}
		rep := audit.Verify(buf.Bytes(), audit.Options{Root: ca.Root, Nodes: []string{"", "a"}})
		if !rep.OK() || len(rep.Sections) != 2 || rep.Sections[1].Node != "" {
			t.Fatalf("export: ok %v, sections %+v: %v", rep.OK(), rep.Sections, rep.Problems)
		}
		var nodes []string
		for _, k := range rep.Keys {
			node, err := audit.KeyNode(k)
			if err != nil {
				t.Fatal(err)
			}
			nodes = append(nodes, node)
		}
		if len(nodes) != 2 || nodes[0] == nodes[1] {
			t.Fatalf("the key's certificates name %q, want the unnamed chain and node a", nodes)
		}
	})
}
