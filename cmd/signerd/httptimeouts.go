package main

import (
	"fmt"
	"time"
)

// httpTimeouts bound how long a client of the socket may take
// (socket.timeouts): to send its request's header (ReadHeader) and whole
// request (Read), to take its answer (Write), to send its next request on
// a kept-alive connection (Idle), and to take an audit export (Export,
// which replaces Write for that answer; a store backup has
// store.backup_timeout). A slow or stalled client holds a connection, and
// with an export or a backup the store's copy, no longer.
type httpTimeouts struct {
	ReadHeader, Read, Write, Idle, Export time.Duration
}

// httpTimeoutBounds are each timeout's key, default and bounds. The
// floor keeps a busy client from being cut off mid-request; the ceilings
// keep a forgotten connection from being held for good.
var httpTimeoutBounds = []struct {
	key           string
	field         func(*httpTimeouts) *time.Duration
	def, min, max time.Duration
}{
	{"read_header", func(t *httpTimeouts) *time.Duration { return &t.ReadHeader }, 5 * time.Second, time.Second, time.Minute},
	{"read", func(t *httpTimeouts) *time.Duration { return &t.Read }, 10 * time.Second, time.Second, 10 * time.Minute},
	{"write", func(t *httpTimeouts) *time.Duration { return &t.Write }, time.Minute, time.Second, time.Hour},
	{"idle", func(t *httpTimeouts) *time.Duration { return &t.Idle }, time.Minute, time.Second, time.Hour},
	{"export", func(t *httpTimeouts) *time.Duration { return &t.Export }, time.Hour, time.Minute, 24 * time.Hour},
}

// fill sets each timeout left at zero to its default and checks the
// others against their bounds.
func (t *httpTimeouts) fill() error {
	headerDefaulted := t.ReadHeader == 0
	for _, b := range httpTimeoutBounds {
		d := b.field(t)
		switch {
		case *d == 0:
			*d = b.def
		case *d < b.min:
			return fmt.Errorf("socket.timeouts.%s %s: below %s", b.key, *d, b.min)
		case *d > b.max:
			return fmt.Errorf("socket.timeouts.%s %s: more than %s", b.key, *d, b.max)
		}
	}
	// The header is part of the request: a longer limit for it than for
	// the whole request would never apply.
	if t.ReadHeader > t.Read && headerDefaulted {
		t.ReadHeader = t.Read
	}
	if t.ReadHeader > t.Read {
		return fmt.Errorf("socket.timeouts.read_header %s: more than socket.timeouts.read %s, which the header is part of", t.ReadHeader, t.Read)
	}
	return nil
}
