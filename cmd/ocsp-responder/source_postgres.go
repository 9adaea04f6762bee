package main

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"signerd/publish"
	"signerd/store"
)

// errUnavailable marks a source that cannot be read now (its database is
// down or slow): the request is answered tryLater, which tells the client
// to ask again, rather than internalError.
var errUnavailable = errors.New("source unavailable")

// pgSource reads responses from signerd's PostgreSQL store (store.Reader:
// the table ocsp_responses alone, in read-only sessions, each read
// bounded by a timeout). A response read is cached for ttl: there is no
// file to stat, and a read per request would put every client's load on
// the database. What signerd commits is therefore served at most ttl
// later. A certificate with no response is not cached, so a new
// certificate's first response is served as soon as it is committed; an
// unknown serial costs one primary-key lookup, as a cache miss does.
type pgSource struct {
	opts  store.ReaderOptions
	dsn   string
	ttl   time.Duration
	now   func() time.Time
	cache *lru
	log   *slog.Logger

	// reader is nil until the database could be reached: a responder
	// started during a database outage serves tryLater, and opens the
	// reader at a request once the database is back, rather than exit
	// and leave clients without any answer.
	reader     atomic.Pointer[store.Reader]
	opening    sync.Mutex // held by the one request that opens the reader
	lastOpen   time.Time
	openFailed error
}

// reopenEvery bounds how often a request tries to open the reader while
// the database cannot be reached: each try may take the read timeout.
const reopenEvery = time.Second

// openPGSource opens the reader. A database that cannot be reached is not
// an error (requests are answered tryLater until it can); one that can,
// and refuses (a schema other than this code's, a role that may not read
// the responses, a DSN it rejects), is: that is a configuration to fix.
func openPGSource(c *postgresSource, cacheEntries int, log *slog.Logger) (*pgSource, error) {
	s := &pgSource{opts: store.ReaderOptions{Timeout: c.timeout, MaxConns: c.maxConns}, dsn: c.dsn, ttl: c.cacheTTL,
		now: time.Now, cache: newLRU(cacheEntries), log: log}
	r, err := store.OpenPostgresReader(c.dsn, s.opts)
	switch {
	case errors.Is(err, store.ErrUnavailable):
		log.Warn("store unavailable at start; answering tryLater until it is reached", "err", err)
		s.lastOpen, s.openFailed = s.now(), err
	case err != nil:
		return nil, fmt.Errorf("source.postgres: %w", err)
	default:
		s.reader.Store(r)
	}
	return s, nil
}

func (s *pgSource) close() error {
	s.opening.Lock()
	defer s.opening.Unlock()
	if r := s.reader.Load(); r != nil {
		return r.Close()
	}
	return nil
}

// current is the reader, opened first if it is not yet, by one request
// at most once per reopenEvery; requests that come while another opens
// it, or before the next try, are unavailable at once rather than wait.
func (s *pgSource) current() (*store.Reader, error) {
	if r := s.reader.Load(); r != nil {
		return r, nil
	}
	if !s.opening.TryLock() {
		return nil, fmt.Errorf("%w: the store reader is being opened", errUnavailable)
	}
	defer s.opening.Unlock()
	if r := s.reader.Load(); r != nil {
		return r, nil
	}
	now := s.now()
	if now.Sub(s.lastOpen) < reopenEvery {
		return nil, fmt.Errorf("%w: %w", errUnavailable, s.openFailed)
	}
	s.lastOpen = now
	r, err := store.OpenPostgresReader(s.dsn, s.opts)
	if err != nil {
		s.openFailed = err
		return nil, fmt.Errorf("%w: %w", errUnavailable, err)
	}
	s.log.Info("store reached", "source", "postgres")
	s.reader.Store(r)
	return r, nil
}

func (s *pgSource) response(ctx context.Context, issuer string, serial []byte) (*response, error) {
	if len(serial) == 0 || serial[0] == 0 || len(serial) > publish.MaxSerialBytes {
		// A serial no certificate has: no response is stored for it.
		return nil, nil
	}
	key := issuer + "/" + hex.EncodeToString(serial)
	now := s.now()
	if r := s.cache.get(key); r != nil && now.Before(r.loaded.Add(s.ttl)) {
		return r, nil
	}
	reader, err := s.current()
	if err != nil {
		return nil, err
	}
	stored, err := reader.OCSPResponse(ctx, issuer, serial)
	switch {
	case errors.Is(err, store.ErrUnavailable):
		return nil, fmt.Errorf("%w: %w", errUnavailable, err)
	case err != nil:
		return nil, err
	case stored == nil || len(stored.DER) == 0:
		// No response (or a certificate due for its first one): none
		// is served, and one that was is no longer.
		s.cache.remove(key)
		return nil, nil
	}
	r, err := newResponse(stored.DER, fileID{})
	if err != nil {
		return nil, fmt.Errorf("response of %s: %w", key, err)
	}
	r.loaded = now
	s.cache.put(key, r)
	return r, nil
}

func (s *pgSource) cached() int { return s.cache.len() }
