package ocitest

import (
	"net/http"
	"sync"
	"sync/atomic"
)

// Served counts what the registry sent for blob GETs: bytes of body,
// requests (and how many at once), and the Range headers asked for. Put
// its Fault first, so it sees what the client is sent (after any other
// fault).
type Served struct {
	bytes    atomic.Int64
	requests atomic.Int64
	inFlight atomic.Int64
	maxIn    atomic.Int64
	mu       sync.Mutex
	ranges   []string
	active   int        // handlers running, guarded by mu
	idle     *sync.Cond // signalled when active drops to 0
}

// Fault counts and lets the request through.
func (s *Served) Fault() Fault {
	return func(w http.ResponseWriter, r *http.Request, next http.Handler) bool {
		if !Blobs(r) {
			return false
		}
		s.requests.Add(1)
		n := s.inFlight.Add(1)
		defer s.inFlight.Add(-1)
		s.mu.Lock()
		s.active++
		s.mu.Unlock()
		defer s.done()
		for m := s.maxIn.Load(); n > m && !s.maxIn.CompareAndSwap(m, n); m = s.maxIn.Load() {
		}
		if rg := r.Header.Get("Range"); rg != "" {
			s.mu.Lock()
			s.ranges = append(s.ranges, rg)
			s.mu.Unlock()
		}
		next.ServeHTTP(&countingWriter{ResponseWriter: w, n: &s.bytes}, r)
		return true
	}
}

// Bytes is how many bytes of blob bodies were sent.
func (s *Served) Bytes() int64 { return s.bytes.Load() }

// Requests is how many blob GETs were answered.
func (s *Served) Requests() int64 { return s.requests.Load() }

// MaxInFlight is the most blob GETs answered at once.
func (s *Served) MaxInFlight() int64 { return s.maxIn.Load() }

// Ranges lists the Range headers of the blob GETs, in order.
func (s *Served) Ranges() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.ranges...)
}

func (s *Served) done() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.active--
	if s.active == 0 && s.idle != nil {
		s.idle.Broadcast()
	}
}

// Settle waits until no blob GET is being answered: a handler counts the
// bytes it wrote after the client may already have read them, and the
// handler of a killed client's request may still be writing. Call it
// before reading the counts (Reset calls it).
func (s *Served) Settle() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.idle == nil {
		s.idle = sync.NewCond(&s.mu)
	}
	for s.active > 0 {
		s.idle.Wait()
	}
}

// Reset starts counting again, once the requests being answered are done
// (Settle): a stopped download's late bytes are not the next one's.
func (s *Served) Reset() {
	s.Settle()
	s.bytes.Store(0)
	s.requests.Store(0)
	s.maxIn.Store(0)
	s.mu.Lock()
	s.ranges = nil
	s.mu.Unlock()
}

type countingWriter struct {
	http.ResponseWriter
	n *atomic.Int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.ResponseWriter.Write(p)
	c.n.Add(int64(n))
	return n, err
}

// Flush passes through, so a cut (CutBlob) behind this still reaches the
// client as it happens.
func (c *countingWriter) Flush() {
	if f, ok := c.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}
