package main

import (
	"net"
	"sync"
	"sync/atomic"
)

// limitListener holds at most max connections open. A connection over the
// cap is closed at once rather than left in the accept queue: a client of
// a public responder does better failing fast (and soft-failing) than
// waiting behind connections that read_header and idle will cut.
type limitListener struct {
	net.Listener
	slots   chan struct{}
	refused atomic.Uint64
}

func limitConnections(l net.Listener, max int) *limitListener {
	return &limitListener{Listener: l, slots: make(chan struct{}, max)}
}

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		select {
		case l.slots <- struct{}{}:
			return &limitedConn{Conn: c, release: func() { <-l.slots }}, nil
		default:
			l.refused.Add(1)
			c.Close()
		}
	}
}

type limitedConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}
