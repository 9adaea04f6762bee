package store

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// VerifyPostgres checks the store in the PostgreSQL database dsn names as
// Verify checks a file: the schema version (from schema_migrations) and
// tables, every record under its key, each derived index against the
// records, and the audit chain from the first event to the head. It reads
// one REPEATABLE READ snapshot in a read-only transaction and takes no
// lock, so it may run while signerd serves from the database (it then
// checks the records as they were when it began). An error means the
// database could not be read; what is wrong inside it is in the report's
// findings, whose Bucket is the table's name as Verify gives it ("in-flight"
// for the table in_flight).
func VerifyPostgres(ctx context.Context, dsn string) (*Report, error) {
	conn, where, err := connectPostgres(ctx, dsn)
	if err != nil {
		return nil, fmt.Errorf("verify store postgres: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"); err != nil {
		return nil, fmt.Errorf("verify store postgres %s: %w", where, err)
	}
	// Nothing to end: the transaction is read only, and closing the
	// connection ends it.
	r := &Report{}
	ok, err := verifyPostgresSchema(ctx, conn, r)
	if err != nil {
		return nil, fmt.Errorf("verify store postgres %s: %w", where, err)
	}
	if !ok {
		return r, nil
	}
	v := &verifier{t: &Tx{r: &pgRecords{ctx: ctx, conn: conn, kind: ErrUnavailable}}, r: r, counts: map[string]int{}}
	v.run()
	if v.err != nil {
		return nil, fmt.Errorf("verify store postgres %s: %w", where, v.err)
	}
	return r, nil
}

// verifyPostgresSchema checks the schema version and that every table is
// there, and reports whether the records can be read.
func verifyPostgresSchema(ctx context.Context, conn *pgx.Conn, r *Report) (bool, error) {
	schema, err := pgSchemaVersion(ctx, conn)
	if err != nil {
		return false, err
	}
	r.Schema = schema
	switch {
	case schema == 0:
		r.Findings = append(r.Findings, Finding{Bucket: "schema_migrations",
			Problem: "missing: the database holds no signerd schema (signerctl store upgrade creates it)"})
		return false, nil
	case schema != pgSchemaVersionLatest:
		r.Findings = append(r.Findings, Finding{Bucket: "schema_migrations",
			Problem: fmt.Sprintf("schema version %d; this signerd reads version %d only", schema, pgSchemaVersionLatest)})
		return false, nil
	}
	names := make([]string, len(tables))
	for i, t := range tables {
		names[i] = pgTableName(t)
	}
	rows, err := conn.Query(ctx, "SELECT t FROM unnest($1::text[]) AS t WHERE to_regclass(quote_ident(t)) IS NULL", names)
	if err != nil {
		return false, fmt.Errorf("check tables: %w", err)
	}
	missing, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return false, fmt.Errorf("check tables: %w", err)
	}
	for _, t := range missing {
		r.Findings = append(r.Findings, Finding{Bucket: t, Problem: "table missing: the database was edited or damaged"})
	}
	return len(missing) == 0, nil
}

// PostgresLocation names the database dsn names for messages and
// reports, as user@host:port/database: never its password.
func PostgresLocation(dsn string) (string, error) {
	d, err := ParsePostgresDSN(dsn)
	if err != nil {
		return "", err
	}
	return d.String(), nil
}
