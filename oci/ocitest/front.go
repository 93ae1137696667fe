package ocitest

import (
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// Wire counts what a Front saw: requests by kind and method, and the
// bytes and connections on the wire (request and answer bytes both, headers
// included), with the most connections open at once.
type Wire struct {
	mu       sync.Mutex
	requests map[string]int64 // "HEAD manifest", "GET blob", ...
	in, out  atomic.Int64     // bytes read from and written to clients
	conns    atomic.Int64
	open     atomic.Int64
	peak     atomic.Int64
}

// Requests returns how many requests of kind ("GET manifest", "HEAD
// manifest", "GET blob", "GET other", ...) were answered; "" counts all.
func (w *Wire) Requests(kind string) int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	if kind != "" {
		return w.requests[kind]
	}
	var n int64
	for _, v := range w.requests {
		n += v
	}
	return n
}

// Kinds returns the counts by kind.
func (w *Wire) Kinds() map[string]int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := map[string]int64{}
	for k, v := range w.requests {
		out[k] = v
	}
	return out
}

// Bytes returns the bytes received from and sent to clients.
func (w *Wire) Bytes() (in, out int64) { return w.in.Load(), w.out.Load() }

// Conns returns the connections accepted and the most open at once.
func (w *Wire) Conns() (total, peak int64) { return w.conns.Load(), w.peak.Load() }

// Reset starts counting again (the peak from the connections open now).
func (w *Wire) Reset() {
	w.mu.Lock()
	w.requests = map[string]int64{}
	w.mu.Unlock()
	w.in.Store(0)
	w.out.Store(0)
	w.conns.Store(0)
	w.peak.Store(w.open.Load())
}

func (w *Wire) count(r *http.Request) {
	kind := "other"
	switch {
	case strings.Contains(r.URL.Path, "/manifests/"):
		kind = "manifest"
	case strings.Contains(r.URL.Path, "/blobs/"):
		kind = "blob"
	case strings.Contains(r.URL.Path, "/referrers/"):
		kind = "referrers"
	}
	w.mu.Lock()
	w.requests[r.Method+" "+kind]++
	w.mu.Unlock()
}

// Count is a Fault that counts each request at the HTTP level and lets it
// through; Front puts it first.
func (w *Wire) Count() Fault {
	return func(_ http.ResponseWriter, r *http.Request, _ http.Handler) bool {
		w.count(r)
		return false
	}
}

// Listen wraps l so that w counts its connections and bytes.
func (w *Wire) Listen(l net.Listener) net.Listener {
	w.mu.Lock()
	if w.requests == nil {
		w.requests = map[string]int64{}
	}
	w.mu.Unlock()
	return &countingListener{Listener: l, w: w}
}

type countingListener struct {
	net.Listener
	w *Wire
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.w.conns.Add(1)
	n := l.w.open.Add(1)
	for {
		p := l.w.peak.Load()
		if n <= p || l.w.peak.CompareAndSwap(p, n) {
			break
		}
	}
	return &countingConn{Conn: c, w: l.w}, nil
}

type countingConn struct {
	net.Conn
	w      *Wire
	closed atomic.Bool
}

func (c *countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.w.in.Add(int64(n))
	return n, err
}

func (c *countingConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.w.out.Add(int64(n))
	return n, err
}

func (c *countingConn) Close() error {
	if c.closed.CompareAndSwap(false, true) {
		c.w.open.Add(-1)
	}
	return c.Conn.Close()
}

// Front starts, on a loopback port, a reverse proxy to upstream (a
// registry started elsewhere, such as the distribution binary) that
// counts what passes (the returned Wire) and lets faults misbehave first:
// fault injection and request counting in front of a registry that runs
// in its own process. It stops when the test ends.
func Front(t testing.TB, upstream *Registry, faults ...Fault) (*Registry, *Wire) {
	t.Helper()
	u, err := url.Parse(upstream.URL)
	if err != nil {
		t.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.FlushInterval = -1 // stream blobs as they come
	// A client's cut or a fault's abort is not a server error to log.
	rp.ErrorLog = log.New(io.Discard, "", 0)
	w := &Wire{}
	srv := httptest.NewUnstartedServer(Faulty(rp, append([]Fault{w.Count()}, faults...)...))
	srv.Listener = w.Listen(srv.Listener)
	srv.Start()
	t.Cleanup(srv.Close)
	host := strings.TrimPrefix(srv.URL, "http://")
	return &Registry{Host: host, URL: srv.URL, Referrers: upstream.Referrers}, w
}

// Hang never answers matching requests: it holds them until the client
// gives up (its context ends), as a registry that accepted the connection
// and then stalled.
func Hang(match Match, fired ...*Counter) Fault {
	return func(w http.ResponseWriter, r *http.Request, _ http.Handler) bool {
		if !match(r) {
			return false
		}
		if c := first(fired); c != nil {
			c.n.Add(1)
		}
		<-r.Context().Done()
		return true
	}
}

// Refused returns a loopback host:port nothing listens on (connections
// are refused).
func Refused(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	host := l.Addr().String()
	l.Close()
	return host
}
