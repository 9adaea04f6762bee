package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// insertNew is one autocommit INSERT … ON CONFLICT DO NOTHING: the
// server's unique index, not the writer lock, decides between processes
// inserting the same key at once (the later one waits for the earlier
// one's commit, then inserts nothing). It commits as the server's
// synchronous_commit says, as every write transaction does.
//
// A first failure to reach the server is tried once more on a fresh
// connection, as beginWrite does. The first attempt may have committed
// with its answer lost; the second then finds the key. value tells the
// two apart when it is unique to the call (the RA nonce claims carry a
// random token): finding its own value, the retry reports the outcome
// unknown (ErrWrite) rather than either answer, since a commit whose
// answer was lost may be on the primary alone (see commitOutcome).
func (b *pgBackend) insertNew(table string, key, value []byte) (bool, error) {
	if _, err := pgStatementsOf(table); err != nil {
		return false, err
	}
	if len(key) == 0 {
		return false, fmt.Errorf("insert into %s: empty key", table)
	}
	id := pgTableIdentifier(table)
	insert := "INSERT INTO " + id + " (k, v) VALUES ($1, $2) ON CONFLICT (k) DO NOTHING RETURNING true"
	ctx, cancel := context.WithTimeout(context.Background(), b.timeout)
	defer cancel()
	var first error
	for attempt := 0; ; attempt++ {
		var inserted bool
		err := b.pool.QueryRow(ctx, insert, key, value).Scan(&inserted)
		switch {
		case err == nil:
			return true, nil
		case errors.Is(err, pgx.ErrNoRows) && first == nil:
			return false, nil
		case errors.Is(err, pgx.ErrNoRows):
			var stored []byte
			err = b.pool.QueryRow(ctx, "SELECT v FROM "+id+" WHERE k = $1", key).Scan(&stored)
			if err == nil && !bytes.Equal(stored, value) {
				return false, nil
			}
			if err == nil || errors.Is(err, pgx.ErrNoRows) {
				return false, fmt.Errorf("%w: insert into %s %x: outcome unknown: the first attempt's answer was lost (%v) and it may have committed",
					ErrWrite, table, key, first)
			}
		case attempt == 0 && pgInfrastructureError(err) && ctx.Err() == nil:
			// A restarted server leaves every pooled connection broken.
			first = err
			b.pool.Reset()
			continue
		}
		return false, classifyPostgres(err, ErrWrite, fmt.Sprintf("insert into %s %x", table, key))
	}
}

// deleteBefore is one autocommit DELETE of at most limit rows, found by
// the key range of prefix (the primary key's index) and their values.
func (b *pgBackend) deleteBefore(table string, prefix, max []byte, limit int) (int, error) {
	if _, err := pgStatementsOf(table); err != nil {
		return 0, err
	}
	id := pgTableIdentifier(table)
	lo, hi := prefix, prefixEnd(prefix)
	if lo == nil {
		lo = []byte{}
	}
	sql := "DELETE FROM " + id + " WHERE k IN (SELECT k FROM " + id + " WHERE k >= $1 AND ($2::bytea IS NULL OR k < $2) AND v < $3 LIMIT $4)"
	ctx, cancel := context.WithTimeout(context.Background(), b.timeout)
	defer cancel()
	tag, err := b.pool.Exec(ctx, sql, lo, hi, max, limit)
	if err != nil {
		return 0, classifyPostgres(err, ErrWrite, fmt.Sprintf("delete from %s under %x before %x", table, prefix, max))
	}
	return int(tag.RowsAffected()), nil
}
