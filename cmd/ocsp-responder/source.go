package main

import (
	"container/list"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"signerd/ocsp"
	"signerd/publish"
)

// response is a pre-signed response as served: its bytes and the headers
// derived from them once, when it is read.
type response struct {
	der          []byte
	times        ocsp.Times
	etag         string    // quoted hex SHA-256 of der
	lastModified string    // thisUpdate, HTTP date
	expires      string    // nextUpdate, HTTP date
	file         fileID    // dirSource: the version of the file read
	loaded       time.Time // pgSource: when it was read
}

func newResponse(der []byte, file fileID) (*response, error) {
	t, err := ocsp.ResponseTimes(der)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(der)
	return &response{der: der, times: t, etag: `"` + hex.EncodeToString(sum[:]) + `"`,
		lastModified: t.ThisUpdate.UTC().Format(http.TimeFormat), expires: t.NextUpdate.UTC().Format(http.TimeFormat), file: file}, nil
}

// source finds the current pre-signed response of a certificate.
type source interface {
	// response is the stored response for serial of issuer (hex SKI);
	// nil, nil when there is none.
	// An error wrapping errUnavailable is answered tryLater.
	response(ctx context.Context, issuer string, serial []byte) (*response, error)
	// cached is how many responses the cache holds.
	cached() int
	close() error
}

// fileID tells one version of a published file from another. PutOCSP
// replaces a response by renaming a new file over it, which changes the
// inode; size and mtime also catch a file rewritten in place.
type fileID struct {
	dev, ino uint64
	size     int64
	mtime    unix.Timespec
}

func fileIDOf(st *unix.Stat_t) fileID {
	return fileID{dev: st.Dev, ino: st.Ino, size: st.Size, mtime: st.Mtim}
}

// maxResponseBytes bounds what is read from one file: a response with a
// delegated responder's certificate and three SingleResponses is under
// 2 KiB, so anything much bigger is not one signerd published.
const maxResponseBytes = 64 << 10

// dirSource reads responses from signerd's publication directory, with an
// LRU cache of those read. A cached response is served only after a stat
// of its file shows the same version (fileID): a response replaced on
// disk is served from the next request on, and one removed is no longer
// served. The stat is one fstatat(2) of a path relative to the directory,
// far cheaper than reading and parsing the file again.
type dirSource struct {
	dirfd int
	cache *lru
}

func openDirSource(dir string, cacheEntries int) (*dirSource, error) {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("source.dir %s: %w", dir, err)
	}
	return &dirSource{dirfd: fd, cache: newLRU(cacheEntries)}, nil
}

func (s *dirSource) close() error { return unix.Close(s.dirfd) }

func (s *dirSource) cached() int { return s.cache.len() }

func (s *dirSource) response(_ context.Context, issuer string, serial []byte) (*response, error) {
	if len(serial) == 0 || serial[0] == 0 || len(serial) > publish.MaxSerialBytes {
		// A serial no certificate has: no response is published for it.
		return nil, nil
	}
	// publish.OCSPName's layout; issuer is a configured issuer's hex SKI,
	// checked at start, so the name needs no second check per request.
	name := publish.OCSPDir + "/" + issuer + "/" + hex.EncodeToString(serial) + ".der"
	var st unix.Stat_t
	if err := unix.Fstatat(s.dirfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		if errors.Is(err, unix.ENOENT) {
			s.cache.remove(name)
			return nil, nil
		}
		return nil, fmt.Errorf("stat %s: %w", name, err)
	}
	if r := s.cache.get(name); r != nil && r.file == fileIDOf(&st) {
		return r, nil
	}
	r, err := s.read(name)
	if r == nil || err != nil {
		return nil, err
	}
	s.cache.put(name, r)
	return r, nil
}

// read reads one response file; its version is the one read (fstat of
// the open file), whatever a concurrent rename does to the name.
func (s *dirSource) read(name string) (*response, error) {
	fd, err := unix.Openat(s.dirfd, name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil, nil
		}
		return nil, fmt.Errorf("open %s: %w", name, err)
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, fmt.Errorf("stat %s: %w", name, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG || st.Size <= 0 || st.Size > maxResponseBytes {
		return nil, fmt.Errorf("%s: not a regular file of 1 to %d octets", name, maxResponseBytes)
	}
	der := make([]byte, st.Size)
	for n := 0; n < len(der); {
		m, err := unix.Read(fd, der[n:])
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			return nil, fmt.Errorf("read %s: %w", name, err)
		}
		if m == 0 {
			return nil, fmt.Errorf("read %s: shorter than its size", name)
		}
		n += m
	}
	r, err := newResponse(der, fileIDOf(&st))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return r, nil
}

// lru is a cache of responses bounded by entries (each is at most
// maxResponseBytes, and about 1 KiB in practice).
type lru struct {
	mu      sync.Mutex
	max     int
	order   list.List // front: most recently used; values *lruEntry
	entries map[string]*list.Element
}

type lruEntry struct {
	key string
	r   *response
}

func newLRU(max int) *lru {
	return &lru{max: max, entries: make(map[string]*list.Element, min(max, 1<<16))}
}

func (c *lru) get(key string) *response {
	if c.max == 0 {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[key]
	if !ok {
		return nil
	}
	c.order.MoveToFront(e)
	return e.Value.(*lruEntry).r
}

func (c *lru) put(key string, r *response) {
	if c.max == 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.entries[key]; ok {
		e.Value.(*lruEntry).r = r
		c.order.MoveToFront(e)
		return
	}
	c.entries[key] = c.order.PushFront(&lruEntry{key: key, r: r})
	if c.order.Len() > c.max {
		last := c.order.Back()
		c.order.Remove(last)
		delete(c.entries, last.Value.(*lruEntry).key)
	}
}

func (c *lru) remove(key string) {
	if c.max == 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.entries[key]; ok {
		c.order.Remove(e)
		delete(c.entries, key)
	}
}

func (c *lru) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.order.Len()
}
