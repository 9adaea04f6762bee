package store

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	bolt "go.etcd.io/bbolt"
)

// boltBackend keeps the tables as the buckets of one bbolt file.
type boltBackend struct {
	db   *bolt.DB
	path string
}

// The buckets by the names the tables give them; the file's layout.
var (
	bucketMeta     = []byte(tableMeta)
	bucketCerts    = []byte(tableCerts)
	bucketSerials  = []byte(tableSerials)
	bucketRequests = []byte(tableRequests)
	bucketInFlight = []byte(tableInFlight)
	bucketRevoked  = []byte(tableRevoked)
	bucketCRL      = []byte(tableCRL)
	bucketStats    = []byte(tableStats)
	bucketAudit    = []byte(tableAudit)
	bucketKeys     = []byte(tableKeys)
	bucketRAReplay = []byte(tableRAReplay)
	// bucketCompromisedKeys is a derived index that stores of schema
	// version 1 written before it lack: it is created where missing.
	bucketCompromisedKeys = []byte(tableCompromisedKeys)
	// The CRL shards' objects and change log came after version 1's
	// other buckets, and add to them without changing any: a file
	// written before them is made whole at open (addedBuckets).
	bucketCRLObjects = []byte(tableCRLObjects)
	bucketCRLChanges = []byte(tableCRLChanges)
	// The OCSP responses and their due times came later still, as the
	// CRL buckets did.
	bucketOCSPResponses = []byte(tableOCSPResponses)
	bucketOCSPDue       = []byte(tableOCSPDue)

	// allBuckets are the buckets every store of the version has. The key
	// index ("keys") is rebuilt at open and "ra-replay" made on first use,
	// so a file without them is not damaged.
	allBuckets = [][]byte{bucketMeta, bucketCerts, bucketSerials, bucketRequests,
		bucketInFlight, bucketRevoked, bucketCRL, bucketStats, bucketAudit, bucketCompromisedKeys,
		bucketCRLObjects, bucketCRLChanges, bucketOCSPResponses, bucketOCSPDue}
	// addedBuckets are the buckets of allBuckets that a file of the
	// version written by an older signerd lacks rightly: open makes them
	// where missing, and verify and migrate read a missing one as empty.
	addedBuckets = [][]byte{bucketCompromisedKeys, bucketCRLObjects, bucketCRLChanges, bucketOCSPResponses, bucketOCSPDue}
)

// addedBucket reports whether name is one of addedBuckets.
func addedBucket(name []byte) bool {
	return slices.ContainsFunc(addedBuckets, func(b []byte) bool { return bytes.Equal(b, name) })
}

func openBoltBackend(path string, o Options) (*boltBackend, error) {
	if o.InitialMmapSize < 0 {
		return nil, fmt.Errorf("open store %s: initial memory map of %d bytes", path, o.InitialMmapSize)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second, FreelistType: bolt.FreelistMapType,
		InitialMmapSize: o.InitialMmapSize})
	if err != nil {
		if errors.Is(err, bolt.ErrTimeout) {
			return nil, fmt.Errorf("open store %s: in use by another process", path)
		}
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	if err := db.Update(initSchema); err != nil {
		db.Close()
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	return &boltBackend{db: db, path: path}, nil
}

// initSchema makes a new file's buckets and checks an old file's: bbolt
// needs no migration command, a store being one file signerd creates.
func initSchema(tx *bolt.Tx) error {
	meta := tx.Bucket(bucketMeta)
	if meta == nil {
		empty := true
		tx.ForEach(func([]byte, *bolt.Bucket) error { empty = false; return nil })
		if !empty {
			return errors.New("file is not a signerd store (no schema version)")
		}
		for _, name := range allBuckets {
			if _, err := tx.CreateBucket(name); err != nil {
				return err
			}
		}
		return tx.Bucket(bucketMeta).Put(keySchema, []byte(strconv.Itoa(SchemaVersion)))
	}
	v, err := strconv.Atoi(string(meta.Get(keySchema)))
	if err != nil {
		return fmt.Errorf("unreadable schema version %q", meta.Get(keySchema))
	}
	if v != SchemaVersion {
		return fmt.Errorf("schema version %d; this signerd reads version %d only", v, SchemaVersion)
	}
	// Every bucket of the version is there unless the file was edited or
	// damaged; refuse it by name rather than fail on first use.
	for _, name := range allBuckets {
		if tx.Bucket(name) == nil && !addedBucket(name) {
			return fmt.Errorf("bucket %q is missing: the file was edited or damaged; restore a backup", name)
		}
	}
	for _, name := range [][]byte{bucketCRLObjects, bucketCRLChanges, bucketOCSPResponses, bucketOCSPDue} {
		if _, err := tx.CreateBucketIfNotExists(name); err != nil {
			return err
		}
	}
	if tx.Bucket(bucketCompromisedKeys) == nil {
		// No index at all, whatever its mark says: have it rebuilt.
		if err := meta.Delete(keyCompromisedAtHead); err != nil {
			return err
		}
		if _, err := tx.CreateBucket(bucketCompromisedKeys); err != nil {
			return err
		}
	}
	if tx.Bucket(bucketKeys) == nil {
		// No index at all, whatever the mark says: have it rebuilt.
		return meta.Delete(keyKeyIndexAtHead)
	}
	return nil
}

func (b *boltBackend) update(fn func(records) error) error {
	var fnErr error
	err := b.db.Update(func(tx *bolt.Tx) error {
		fnErr = fn(boltRecords{tx})
		return fnErr
	})
	if err != nil && fnErr == nil {
		return fmt.Errorf("%w: %w", ErrWrite, err)
	}
	return err
}

func (b *boltBackend) view(fn func(records) error) error {
	return b.db.View(func(tx *bolt.Tx) error { return fn(boltRecords{tx}) })
}

func (b *boltBackend) close() error { return b.db.Close() }

// boltRecords is one bbolt transaction. A table whose bucket is missing
// reads as empty and is made on first write.
type boltRecords struct{ tx *bolt.Tx }

func (r boltRecords) get(table string, key []byte) ([]byte, error) {
	b := r.tx.Bucket([]byte(table))
	if b == nil {
		return nil, nil
	}
	return b.Get(key), nil
}

func (r boltRecords) put(table string, key, value []byte) error {
	b, err := r.writable(table)
	if err != nil {
		return err
	}
	if value == nil {
		value = []byte{}
	}
	return b.Put(key, value)
}

func (r boltRecords) delete(table string, key []byte) error {
	b := r.tx.Bucket([]byte(table))
	if b == nil {
		return nil
	}
	return b.Delete(key)
}

func (r boltRecords) scan(table string, from, prefix []byte, fn func(key, value []byte) error) error {
	b := r.tx.Bucket([]byte(table))
	if b == nil {
		return nil
	}
	start := prefix
	if bytes.Compare(from, prefix) > 0 {
		start = from
	}
	cur := b.Cursor()
	var k, v []byte
	if start == nil {
		k, v = cur.First()
	} else {
		k, v = cur.Seek(start)
	}
	for ; k != nil && bytes.HasPrefix(k, prefix); k, v = cur.Next() {
		if err := fn(k, v); err != nil {
			return err
		}
	}
	return nil
}

func (r boltRecords) scanRange(table string, lo, hi []byte, fn func(key, value []byte) error) error {
	b := r.tx.Bucket([]byte(table))
	if b == nil {
		return nil
	}
	cur := b.Cursor()
	var k, v []byte
	if len(lo) == 0 {
		k, v = cur.First()
	} else {
		k, v = cur.Seek(lo)
	}
	for ; k != nil && (hi == nil || bytes.Compare(k, hi) < 0); k, v = cur.Next() {
		if err := fn(k, v); err != nil {
			return err
		}
	}
	return nil
}

// scanRangeLimit is scanRange: a bbolt cursor reads no page ahead.
func (r boltRecords) scanRangeLimit(table string, lo, hi []byte, _ int, fn func(key, value []byte) error) error {
	return r.scanRange(table, lo, hi, fn)
}

func (r boltRecords) clear(table string) error {
	if r.tx.Bucket([]byte(table)) == nil {
		return nil
	}
	if err := r.tx.DeleteBucket([]byte(table)); err != nil {
		return err
	}
	_, err := r.tx.CreateBucket([]byte(table))
	return err
}

func (r boltRecords) writable(table string) (*bolt.Bucket, error) {
	if b := r.tx.Bucket([]byte(table)); b != nil {
		return b, nil
	}
	return r.tx.CreateBucket([]byte(table))
}

// prefetch does nothing: a bbolt read costs no round trip.
func (r boltRecords) prefetch(*Prefetch) error { return nil }

// insertNew is a write transaction of its own: bbolt has one writer at a
// time whatever is written, and one process.
func (b *boltBackend) insertNew(table string, key, value []byte) (bool, error) {
	fresh := false
	err := b.update(func(r records) error {
		old, err := r.get(table, key)
		if err != nil || old != nil {
			return err
		}
		fresh = true
		return r.put(table, key, value)
	})
	return fresh && err == nil, err
}

func (b *boltBackend) deleteBefore(table string, prefix, max []byte, limit int) (int, error) {
	n := 0
	err := b.update(func(r records) error {
		var old [][]byte
		if err := r.scan(table, nil, prefix, func(k, v []byte) error {
			if len(old) < limit && bytes.Compare(v, max) < 0 {
				old = append(old, append([]byte(nil), k...))
			}
			return nil
		}); err != nil {
			return err
		}
		// Deleted once the scan is over: bbolt's cursor must not see its
		// bucket change under it.
		for _, k := range old {
			if err := r.delete(table, k); err != nil {
				return err
			}
		}
		n = len(old)
		return nil
	})
	if err != nil {
		return 0, err
	}
	return n, nil
}
