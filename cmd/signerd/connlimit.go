package main

import (
	"bufio"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"signerd/api"
	"strconv"
	"sync"
	"time"
)

// peerLimitListener caps the connections each uid holds open at once, so a
// client that opens connections and never sends on them (or sends half a
// request) exhausts its own share and no one else's. A connection over
// the cap is audited (tallied like every refusal, refusals.go), answered
// 503 too_many_connections and closed (refuseConn).
// signerd_connections_open and signerd_connections_refused_total show
// each uid's count.
type peerLimitListener struct {
	net.Listener
	max     int
	log     *slog.Logger
	metrics *metrics
	refused *refusalLog

	mu     sync.Mutex
	open   map[int]int       // uid → connections open
	warned map[int]time.Time // uid → when a refusal was last logged
}

// maxHeaderBytes bounds a request's head, served or refused.
const maxHeaderBytes = 16 << 10

func limitPerPeer(l net.Listener, max int, log *slog.Logger, m *metrics, refusals *refusalLog) *peerLimitListener {
	return &peerLimitListener{Listener: l, max: max, log: log, metrics: m, refused: refusals, open: map[int]int{}, warned: map[int]time.Time{}}
}

func (l *peerLimitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		p, err := peerCred(c)
		if err != nil {
			c.Close() // withPeer would refuse it too; no uid to count it under
			continue
		}
		if l.take(p.UID) {
			return &countedConn{Conn: c, peer: p, release: func() { l.release(p.UID) }}, nil
		}
		// Audited before the answer, off the accepting goroutine: a
		// write the store is slow to take holds up only this connection.
		go func() {
			l.refused.refuseConnection(p)
			refuseConn(c, l.max)
		}()
	}
}

func (l *peerLimitListener) take(uid int) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.open[uid] >= l.max {
		l.metrics.connsShed.WithLabelValues(strconv.Itoa(uid)).Inc()
		if time.Since(l.warned[uid]) > time.Minute {
			l.warned[uid] = time.Now()
			l.log.Warn("connection refused: peer holds too many", "uid", uid, "max", l.max)
		}
		return false
	}
	l.open[uid]++
	l.metrics.connsOpen.WithLabelValues(strconv.Itoa(uid)).Set(float64(l.open[uid]))
	return true
}

func (l *peerLimitListener) release(uid int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.open[uid]--
	l.metrics.connsOpen.WithLabelValues(strconv.Itoa(uid)).Set(float64(l.open[uid]))
	if l.open[uid] <= 0 {
		delete(l.open, uid)
	}
}

// refuseConn answers a connection over the cap. It first reads the
// request's head (an HTTP client takes an answer sent before its request
// for a broken connection), and gives the client at most a second to send
// it; after answering it drops what more comes for the rest of that second,
// so the client's write of its body does not fail before it reads the
// answer.
func refuseConn(c net.Conn, max int) {
	defer c.Close()
	body := fmt.Sprintf(`{"code":%q,"message":"this uid holds %d connections, the most signerd allows; close idle ones"}`+"\n",
		api.CodeTooManyConnections, max)
	c.SetDeadline(time.Now().Add(time.Second))
	br := bufio.NewReaderSize(io.LimitReader(c, maxHeaderBytes), 4096)
	if _, err := http.ReadRequest(br); err != nil {
		return // sent nothing, or not HTTP, within the second
	}
	fmt.Fprintf(c, "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
	if uc, ok := c.(*net.UnixConn); ok {
		uc.CloseWrite()
	}
	io.Copy(io.Discard, io.LimitReader(c, maxBody))
}

// countedConn is an accepted connection, with the peer the kernel named
// at accept; it gives its slot back when closed (once).
type countedConn struct {
	net.Conn
	peer    peer
	once    sync.Once
	release func()
}

func (c *countedConn) Close() error {
	c.once.Do(c.release)
	return c.Conn.Close()
}
