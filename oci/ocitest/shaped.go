package ocitest

import (
	"net"
	"sync"
	"testing"
	"time"
)

// Link describes a shaped network path between a client and a registry:
// what a benchmark puts between them with Shaped. The zero value passes
// everything through at loopback speed.
type Link struct {
	// Rate caps the bytes per second in each direction, all connections
	// together (0: no cap).
	Rate float64
	// PerConn caps the bytes per second of each connection in each
	// direction (0: no cap), as object stores and CDNs often do.
	PerConn float64
	// Delay is added each way: a request waits Delay before the registry
	// sees it, an answer Delay before the client does, and a new
	// connection a round trip (2×Delay) for its handshake.
	Delay time.Duration
}

// Shaped starts a TCP proxy on 127.0.0.1 in front of reg that carries
// every connection as link says, and returns the registry as seen through
// it: references made with its Ref go through the link. The proxy stops
// when the test ends.
//
// This kernel has no netem (and tbf shapes only a device's total), so the
// delay and the per-connection cap are the proxy's: each direction of a
// connection is read as fast as its token buckets allow (the connection's
// and the link's), and each piece is written Delay after it was read. The
// proxy ends TCP on both sides, so the client's congestion window never
// sees the delay: slow start is free, which flatters short transfers a
// little (the research measured about 0.1 s of a 1.2 s update).
func Shaped(t testing.TB, reg *Registry, link Link) *Registry {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{l: l, to: reg.Host, link: link, up: newBucket(link.Rate), down: newBucket(link.Rate)}
	go p.serve()
	t.Cleanup(p.close)
	host := l.Addr().String()
	return &Registry{Host: host, URL: "http://" + host, Dir: reg.Dir, Referrers: reg.Referrers}
}

type proxy struct {
	l        net.Listener
	to       string
	link     Link
	up, down *bucket // the link's total, each direction
	mu       sync.Mutex
	conns    []net.Conn
	closed   bool
	wg       sync.WaitGroup
}

func (p *proxy) serve() {
	for {
		c, err := p.l.Accept()
		if err != nil {
			return
		}
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			p.carry(c)
		}()
	}
}

func (p *proxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	p.conns = append(p.conns, c)
	return true
}

func (p *proxy) close() {
	p.l.Close()
	p.mu.Lock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns, p.closed = nil, true
	p.mu.Unlock()
	p.wg.Wait()
}

// carry joins client c to the registry through the link.
func (p *proxy) carry(c net.Conn) {
	defer c.Close()
	if !p.track(c) {
		return
	}
	time.Sleep(2 * p.link.Delay) // the handshake's round trip
	s, err := net.Dial("tcp", p.to)
	if err != nil {
		return
	}
	defer s.Close()
	if !p.track(s) {
		return
	}
	done := make(chan struct{}, 2)
	go func() { p.pipe(s, c, p.up, newBucket(p.link.PerConn)); done <- struct{}{} }()
	go func() { p.pipe(c, s, p.down, newBucket(p.link.PerConn)); done <- struct{}{} }()
	<-done
	// One side ended: close both, so the other pipe ends too.
	c.Close()
	s.Close()
	<-done
}

// piece is bytes read from one side, due at the other side at due.
type piece struct {
	b   []byte
	due time.Time
}

// pipe copies src to dst: read as the buckets allow, written Delay later.
func (p *proxy) pipe(dst, src net.Conn, total, conn *bucket) {
	const pieceSize = 16 << 10
	line := make(chan piece, 1024) // in flight: up to 16 MiB, more than any delay×rate here
	go func() {
		defer close(line)
		for {
			b := make([]byte, pieceSize)
			n, err := src.Read(b)
			if n > 0 {
				conn.take(n)
				total.take(n)
				line <- piece{b[:n], time.Now().Add(p.link.Delay)}
			}
			if err != nil {
				return
			}
		}
	}()
	for pc := range line {
		if d := time.Until(pc.due); d > 0 {
			time.Sleep(d)
		}
		if _, err := dst.Write(pc.b); err != nil {
			src.Close() // stop the reader
			for range line {
			}
			return
		}
	}
	// src ended: pass the end on (half-close) once what was read is out.
	if tc, ok := dst.(*net.TCPConn); ok {
		tc.CloseWrite()
	}
}

// bucket is a token bucket of rate bytes per second (0: unlimited) with a
// small burst, shared by the goroutines that take from it.
type bucket struct {
	mu     sync.Mutex
	rate   float64
	burst  float64
	tokens float64
	last   time.Time
}

func newBucket(rate float64) *bucket {
	// A burst of 2 ms at the rate (at least one piece), so that the cap
	// holds over short windows too.
	return &bucket{rate: rate, burst: max(rate*0.002, 16<<10), last: time.Now()}
}

// take waits until n bytes may pass.
func (b *bucket) take(n int) {
	if b == nil || b.rate <= 0 {
		return
	}
	b.mu.Lock()
	now := time.Now()
	b.tokens = min(b.burst, b.tokens+b.rate*now.Sub(b.last).Seconds())
	b.last = now
	b.tokens -= float64(n) // may go below zero: the debt is this taker's wait
	wait := time.Duration(-b.tokens / b.rate * float64(time.Second))
	b.mu.Unlock()
	if wait > 0 {
		time.Sleep(wait)
	}
}
