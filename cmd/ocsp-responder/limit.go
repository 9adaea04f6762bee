package main

import (
	"net"
	"sync"
	"sync/atomic"
)

// limitListener holds at most max connections open, and at most perHost
// from one remote address (0: no such cap), so that a few clients keeping
// idle connections cannot take every slot and shut the others out (OCSP
// clients that get no answer mostly take the certificate as good). A
// connection over a cap is closed at once rather than left in the accept
// queue: a client of a public responder does better failing fast (and
// soft-failing) than waiting behind connections that read_header and
// idle will cut.
type limitListener struct {
	net.Listener
	slots   chan struct{}
	perHost int
	refused atomic.Uint64

	mu     sync.Mutex
	byHost map[string]int
}

func limitConnections(l net.Listener, max, perHost int) *limitListener {
	return &limitListener{Listener: l, slots: make(chan struct{}, max), perHost: perHost, byHost: map[string]int{}}
}

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		host := remoteHost(c)
		if !l.take(host) {
			l.refused.Add(1)
			c.Close()
			continue
		}
		select {
		case l.slots <- struct{}{}:
			return &limitedConn{Conn: c, release: func() { <-l.slots; l.give(host) }}, nil
		default:
			l.give(host)
			l.refused.Add(1)
			c.Close()
		}
	}
}

// take counts a connection from host, unless host holds perHost already.
func (l *limitListener) take(host string) bool {
	if l.perHost <= 0 {
		return true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.byHost[host] >= l.perHost {
		return false
	}
	l.byHost[host]++
	return true
}

func (l *limitListener) give(host string) {
	if l.perHost <= 0 {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.byHost[host]--; l.byHost[host] <= 0 {
		delete(l.byHost, host)
	}
}

// remoteHost is c's remote address without its port; for IPv6, its /64,
// which one client commonly holds whole.
func remoteHost(c net.Conn) string {
	host, _, err := net.SplitHostPort(c.RemoteAddr().String())
	if err != nil {
		return c.RemoteAddr().String()
	}
	if ip := net.ParseIP(host); ip != nil && ip.To4() == nil {
		return ip.Mask(net.CIDRMask(64, 128)).String() + "/64"
	}
	return host
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
