package main

import (
	"io"
	"net"
	"testing"
	"time"
)

// TestConnectionsPerHost: one address holding its share of connections
// has its next one closed at once, while the responder's cap is not
// reached; a slot it frees is taken again.
func TestConnectionsPerHost(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := limitConnections(ln, 8, 2)
	defer l.Close()
	accepted := make(chan net.Conn, 8)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	dial := func() net.Conn {
		t.Helper()
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	closedAtOnce := func(c net.Conn) bool {
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		_, err := c.Read(make([]byte, 1))
		return err == io.EOF
	}
	a, b := dial(), dial()
	held := []net.Conn{<-accepted, <-accepted}
	third := dial()
	if !closedAtOnce(third) {
		t.Fatal("a third connection from one address was not closed")
	}
	if n := l.refused.Load(); n != 1 {
		t.Errorf("%d connections refused, want 1", n)
	}
	held[0].Close()
	a.Close()
	fourth := dial()
	select {
	case c := <-accepted:
		c.Close()
	case <-time.After(5 * time.Second):
		t.Fatal("a connection after one was freed was not accepted")
	}
	fourth.Close()
	b.Close()
	held[1].Close()
}
