package store

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// Migration is one step of the PostgreSQL schema: applying every migration
// up to version N, in order, gives schema version N.
type Migration struct {
	Version     int
	Description string
	SQL         string
}

// pgMigrations are the schema's steps, oldest first; the last one's
// version is the database's schema version, pgSchemaVersionLatest. A
// released migration never changes; a new layout is a new migration.
//
// The records themselves have their own version, SchemaVersion, which the
// bbolt file records: a database of any of these versions holds the
// records of SchemaVersion in the same tables under the same keys, so a
// file moves into it record for record (MigrateToPostgres). Version 2
// adds only what a database shared by several nodes needs around the
// records (views that read the nodes' audit chains and claims); an older
// signerd, which knows nothing of nodes, refuses it as newer than its own.
// Version 3 adds the tables of sharded and delta CRLs (crl.go), which a
// file of the same SchemaVersion gains at open: records are only added.
// Version 4 adds the tables of pre-signed OCSP responses (ocsp.go) in the
// same way.
var pgMigrations = []Migration{
	{Version: 1, Description: "the tables of signerd's records", SQL: pgSchemaV1},
	{Version: 2, Description: "views of several nodes' audit chains and name claims", SQL: pgSchemaV2},
	{Version: 3, Description: "the CRL shards' objects and change log", SQL: pgSchemaV3},
	{Version: 4, Description: "the pre-signed OCSP responses and their due times", SQL: pgSchemaV4},
}

// pgSchemaVersionLatest is the schema version this signerd reads.
var pgSchemaVersionLatest = pgMigrations[len(pgMigrations)-1].Version

// pgSchemaV1 keeps each table of backend.go (its name with '-' written
// '_') as byte keys and byte values: bytea compares bytewise, shortest
// first, as bbolt orders keys, so both engines read records in the same
// order. The views are for operators reading the records with psql;
// signerd never reads them.
const pgSchemaV1 = `
CREATE TABLE schema_migrations (
	version     int PRIMARY KEY,
	description text NOT NULL,
	applied_at  timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE meta             (k bytea PRIMARY KEY, v bytea NOT NULL);
CREATE TABLE certificates     (k bytea PRIMARY KEY, v bytea NOT NULL);
CREATE TABLE serials          (k bytea PRIMARY KEY, v bytea NOT NULL);
CREATE TABLE requests         (k bytea PRIMARY KEY, v bytea NOT NULL);
CREATE TABLE in_flight        (k bytea PRIMARY KEY, v bytea NOT NULL);
CREATE TABLE revoked          (k bytea PRIMARY KEY, v bytea NOT NULL);
CREATE TABLE crl              (k bytea PRIMARY KEY, v bytea NOT NULL);
CREATE TABLE statistics       (k bytea PRIMARY KEY, v bytea NOT NULL);
CREATE TABLE audit            (k bytea PRIMARY KEY, v bytea NOT NULL);
CREATE TABLE compromised_keys (k bytea PRIMARY KEY, v bytea NOT NULL);
CREATE TABLE "keys"           (k bytea PRIMARY KEY, v bytea NOT NULL);
CREATE TABLE ra_replay        (k bytea PRIMARY KEY, v bytea NOT NULL);

CREATE VIEW certificate_records AS
	SELECT encode(k, 'hex') AS serial, convert_from(v, 'UTF8')::jsonb AS record FROM certificates;
CREATE VIEW audit_events AS
	SELECT ('x' || encode(k, 'hex'))::bit(64)::bigint AS seq, convert_from(v, 'UTF8')::jsonb AS event FROM audit;
`

// pgSchemaV2 shows each node's audit events under its name (the unnamed
// chain's as ”), by the key layout of chain.go, and the nodes' claims.
const pgSchemaV2 = `
DROP VIEW audit_events;
CREATE VIEW audit_events AS
	SELECT CASE WHEN get_byte(k, 0) = 0 THEN '' ELSE convert_from(substring(k FROM 2 FOR length(k) - 10), 'UTF8') END AS node,
		('x' || encode(substring(k FROM length(k) - 7), 'hex'))::bit(64)::bigint AS seq,
		convert_from(v, 'UTF8')::jsonb AS event
	FROM audit;
CREATE VIEW node_claims AS
	SELECT convert_from(substring(k FROM 6), 'UTF8') AS node, convert_from(v, 'UTF8')::jsonb AS claim
	FROM meta WHERE substring(k FROM 1 FOR 5) = 'node@'::bytea;
`

// pgSchemaV3 keeps the CRL shards' latest CRLs and the change log delta
// CRLs are made from, and shows the log by the key layout of crl.go.
const pgSchemaV3 = `
CREATE TABLE crl_objects (k bytea PRIMARY KEY, v bytea NOT NULL);
CREATE TABLE crl_changes (k bytea PRIMARY KEY, v bytea NOT NULL);

CREATE VIEW crl_change_records AS
	SELECT convert_from(substring(k FROM 1 FOR length(k) - 9), 'UTF8') AS issuer,
		('x' || encode(substring(k FROM length(k) - 7), 'hex'))::bit(64)::bigint AS seq,
		encode(substring(v FROM 9), 'hex') AS serial,
		CASE WHEN substring(v FROM 1 FOR 8) = '\x0000000000000000'::bytea THEN NULL
			ELSE to_timestamp(('x' || encode(substring(v FROM 1 FOR 8), 'hex'))::bit(64)::bigint / 1e9) END AS at
	FROM crl_changes;
`

// pgSchemaV4 keeps each certificate's latest OCSP response and when it is
// next due, and shows the responses by the layout of ocsp.go.
//
// An OCSP responder reads ocsp_responses alone (Reader), as a role of its
// own that needs no more than
//
//	GRANT CONNECT ON DATABASE signerd TO ocsp_responder;
//	GRANT USAGE ON SCHEMA public TO ocsp_responder;
//	GRANT SELECT ON ocsp_responses, schema_migrations TO ocsp_responder;
//
// The table is the narrow grant: it holds signed responses, which are
// public, and nothing else, and a lookup by its primary key is the one
// indexed read a request costs; schema_migrations tells the responder
// whether it reads the records' layout. No view stands between them (a
// view named ocsp_responses would take the table's name, which is the
// bucket's): ocsp_response_records is for operators, as the other views.
const pgSchemaV4 = `
CREATE TABLE ocsp_responses (k bytea PRIMARY KEY, v bytea NOT NULL);
CREATE TABLE ocsp_due       (k bytea PRIMARY KEY, v bytea NOT NULL);

CREATE VIEW ocsp_response_records AS
	SELECT convert_from(substring(k FROM 1 FOR nullif(position('\x00'::bytea IN k), 0) - 1), 'UTF8') AS issuer,
		encode(substring(k FROM nullif(position('\x00'::bytea IN k), 0) + 1), 'hex') AS serial,
		to_timestamp(nullif(('x' || encode(substring(v FROM 2 FOR 8), 'hex'))::bit(64)::bigint, 0) / 1e9) AS this_update,
		to_timestamp(nullif(('x' || encode(substring(v FROM 10 FOR 8), 'hex'))::bit(64)::bigint, 0) / 1e9) AS next_update,
		to_timestamp(nullif(('x' || encode(substring(v FROM 18 FOR 8), 'hex'))::bit(64)::bigint, 0) / 1e9) AS due_at,
		nullif(substring(v FROM 26), ''::bytea) AS der
	FROM ocsp_responses;
`

// UpgradePostgres brings the schema of the database named by dsn to this
// signerd's version: it applies the migrations the database lacks, each
// in a transaction of its own, and returns them (none if it was current).
// It refuses while a signerd has the database open, and a schema newer
// than this signerd's.
func UpgradePostgres(ctx context.Context, dsn string) ([]Migration, error) {
	conn, where, err := connectPostgres(ctx, dsn)
	if err != nil {
		return nil, fmt.Errorf("upgrade store postgres: %w", err)
	}
	// Released before the connection closes, so a signerd started right
	// after the upgrade finds the database free.
	defer releaseInUseLock(context.WithoutCancel(ctx), conn, false)
	// The in-use lock, held until the upgrade ends: no signerd opens the
	// database while its schema changes, and no two upgrades run at once.
	var version int
	var locked bool
	if err := conn.QueryRow(ctx, "SELECT current_setting('server_version_num')::int, pg_try_advisory_lock($1)",
		pgLockInUse).Scan(&version, &locked); err != nil {
		return nil, fmt.Errorf("upgrade store postgres %s: %w", where, err)
	}
	if version < pgMinServerVersion {
		return nil, fmt.Errorf("upgrade store postgres %s: PostgreSQL server version %d; signerd needs %d or newer",
			where, version, pgMinServerVersion)
	}
	if !locked {
		return nil, fmt.Errorf("upgrade store postgres %s: the database is %w: stop it first", where, errPostgresInUse)
	}
	current, err := pgSchemaVersion(ctx, conn)
	if err != nil {
		return nil, fmt.Errorf("upgrade store postgres %s: %w", where, err)
	}
	if latest := pgMigrations[len(pgMigrations)-1].Version; current > latest {
		return nil, fmt.Errorf("upgrade store postgres %s: schema version %d was written by a newer signerd (this one knows up to %d)",
			where, current, latest)
	}
	var applied []Migration
	for _, m := range pgMigrations {
		if m.Version <= current {
			continue
		}
		err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			// No arguments: sent as one simple query, several statements.
			if _, err := tx.Exec(ctx, m.SQL); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, "INSERT INTO schema_migrations (version, description) VALUES ($1, $2)",
				m.Version, m.Description)
			return err
		})
		if err != nil {
			return applied, fmt.Errorf("upgrade store postgres %s: migration %d (%s): %w", where, m.Version, m.Description, err)
		}
		applied = append(applied, m)
	}
	return applied, nil
}

// PostgresSchemaVersion is the schema version of the database named by
// dsn: 0 if it holds no signerd schema.
func PostgresSchemaVersion(ctx context.Context, dsn string) (int, error) {
	conn, where, err := connectPostgres(ctx, dsn)
	if err != nil {
		return 0, fmt.Errorf("read schema version of store postgres: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	v, err := pgSchemaVersion(ctx, conn)
	if err != nil {
		return 0, fmt.Errorf("read schema version of store postgres %s: %w", where, err)
	}
	return v, nil
}

// connectPostgres opens one connection outside any pool.
func connectPostgres(ctx context.Context, dsn string) (*pgx.Conn, string, error) {
	cfg, err := parsePostgresDSN(dsn)
	if err != nil {
		return nil, "", err
	}
	where := pgWhere(cfg.ConnConfig)
	conn, err := pgx.ConnectConfig(ctx, cfg.ConnConfig)
	if err != nil {
		return nil, "", fmt.Errorf("%s: %w", where, err)
	}
	return conn, where, nil
}

// pgSchemaVersion is the highest migration applied, 0 if none ever was.
func pgSchemaVersion(ctx context.Context, conn *pgx.Conn) (int, error) {
	var exists bool
	if err := conn.QueryRow(ctx, "SELECT to_regclass('schema_migrations') IS NOT NULL").Scan(&exists); err != nil {
		return 0, fmt.Errorf("read schema version: %w", err)
	}
	if !exists {
		return 0, nil
	}
	var version int
	if err := conn.QueryRow(ctx, "SELECT coalesce(max(version), 0) FROM schema_migrations").Scan(&version); err != nil {
		return 0, fmt.Errorf("read schema version: %w", err)
	}
	return version, nil
}

// checkPostgresSchema refuses a database whose schema is not this
// signerd's, naming what to do, and one that lacks a table of it.
func checkPostgresSchema(ctx context.Context, conn *pgx.Conn) error {
	v, err := pgSchemaVersion(ctx, conn)
	if err != nil {
		return err
	}
	switch {
	case v == 0:
		return fmt.Errorf("the database holds no signerd schema: create it with %s", pgUpgradeCommand)
	case v < pgSchemaVersionLatest:
		return fmt.Errorf("schema version %d; this signerd reads version %d: migrate it with %s",
			v, pgSchemaVersionLatest, pgUpgradeCommand)
	case v > pgSchemaVersionLatest:
		return fmt.Errorf("schema version %d was written by a newer signerd (this one reads version %d)", v, pgSchemaVersionLatest)
	}
	names := make([]string, len(tables))
	for i, t := range tables {
		names[i] = pgTableName(t)
	}
	rows, err := conn.Query(ctx, "SELECT t FROM unnest($1::text[]) AS t WHERE to_regclass(quote_ident(t)) IS NULL", names)
	if err != nil {
		return fmt.Errorf("check tables: %w", err)
	}
	missing, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return fmt.Errorf("check tables: %w", err)
	}
	if len(missing) > 0 {
		return fmt.Errorf("schema version %d but tables %v are missing: the database was edited or damaged; restore a backup",
			v, missing)
	}
	return nil
}
