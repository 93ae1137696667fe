package deltabench

import (
	"time"
)

// Link is a shaped network path between a node and a registry, as the
// benchmark will make it with tbf and added delay: a bandwidth all
// connections share, a round-trip time, and optionally a cap per
// connection (object stores and CDNs).
type Link struct {
	Bandwidth float64       // bytes per second, all connections together
	RTT       time.Duration // round trip, the added delay both ways included
	PerConn   float64       // bytes per second per connection; 0 = no cap
}

// Fetch is what a client does over a Link: Setup sequential round trips
// on the first connection (connect, resolve the tag, the manifest, the
// referrers...), the last of which carries SetupBytes (an index), then
// Requests (HTTP/1.1 Range requests, one at a time per connection) spread
// over Conns connections, each taking the next request when it is done.
// With H2 the requests go out together on one connection (HTTP/2 streams).
type Fetch struct {
	Setup      int
	SetupBytes int64
	Requests   []int64
	Conns      int
	H2         bool
	// Redirect adds a round trip to every data request: a registry that
	// answers each blob GET with a redirect to its storage or CDN, when
	// the client does not reuse the redirect's target.
	Redirect bool
}

// TCP's start: an initial window of 10 segments, doubling per round trip
// (slow start) until the path is full.
const (
	mss      = 1448
	initCwnd = 10 * mss
)

type conn struct {
	cwnd      float64
	wait      time.Duration // until the response's first byte
	remaining float64       // of the current request; < 0 idle
}

// Time estimates the wall time of f over l with a fluid model in 1 ms
// steps: each busy connection moves min(cwnd/RTT, its fair share of the
// bandwidth, the per-connection cap) and grows cwnd by what it moved
// (slow start) up to twice the path's bandwidth-delay product; a request
// costs one round trip before its first byte. No loss, no server time.
func (l Link) Time(f Fetch) time.Duration {
	const dt = time.Millisecond
	bdp := l.Bandwidth * l.RTT.Seconds()
	maxCwnd := max(2*bdp, initCwnd)
	conns := max(f.Conns, 1)
	reqs := f.Requests
	if f.H2 {
		var sum int64
		for _, r := range reqs {
			sum += r
		}
		reqs = nil
		if sum > 0 {
			reqs = []int64{sum}
		}
		conns = 1
	}
	cs := make([]*conn, conns)
	for i := range cs {
		cs[i] = &conn{cwnd: initCwnd, remaining: -1}
	}
	var now time.Duration
	// step moves data on the busy connections for one dt.
	step := func() {
		active := 0
		for _, c := range cs {
			if c.remaining > 0 && c.wait <= 0 {
				active++
			}
		}
		for _, c := range cs {
			if c.remaining < 0 {
				continue
			}
			if c.wait > 0 {
				c.wait -= dt
				continue
			}
			rate := min(c.cwnd/l.RTT.Seconds(), l.Bandwidth/float64(max(active, 1)))
			if l.PerConn > 0 {
				rate = min(rate, l.PerConn)
			}
			moved := min(rate*dt.Seconds(), c.remaining)
			c.remaining -= moved
			c.cwnd = min(c.cwnd+moved, maxCwnd)
			if c.remaining <= 0 {
				c.remaining = -1
			}
		}
		now += dt
	}
	// Setup: sequential round trips on the first connection; the other
	// connections connect meanwhile (one round trip, already counted).
	for range f.Setup - 1 {
		now += l.RTT
	}
	if f.Setup > 0 {
		cs[0].wait, cs[0].remaining = l.RTT, float64(max(f.SetupBytes, 1))
		for cs[0].remaining >= 0 {
			step()
		}
	}
	wait := l.RTT
	if f.Redirect {
		wait *= 2
	}
	next := 0
	for {
		busy := false
		for _, c := range cs {
			if c.remaining < 0 && next < len(reqs) {
				c.wait, c.remaining = wait, float64(max(reqs[next], 1))
				next++
			}
			busy = busy || c.remaining >= 0
		}
		if !busy {
			return now
		}
		step()
	}
}
