package ocitest

import (
	"bytes"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
)

// Fault decides, per request, whether to misbehave. It returns true when
// it has answered the request itself; otherwise the next fault (and
// finally the registry) serves it. Faults are safe for concurrent use.
type Fault func(w http.ResponseWriter, r *http.Request, next http.Handler) bool

// Match selects requests a fault applies to.
type Match func(r *http.Request) bool

// Blobs matches GET requests for blobs.
func Blobs(r *http.Request) bool {
	return r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/sha256:")
}

// Manifests matches GET and HEAD requests for manifests.
func Manifests(r *http.Request) bool {
	return (r.Method == http.MethodGet || r.Method == http.MethodHead) && strings.Contains(r.URL.Path, "/manifests/")
}

// Any matches every request.
func Any(*http.Request) bool { return true }

// Faulty wraps h so that each fault sees every request first, in order:
// a fault's next is the faults after it, then h (so a Served put first
// counts what the later faults send).
func Faulty(h http.Handler, faults ...Fault) http.Handler {
	for i := len(faults) - 1; i >= 0; i-- {
		f, next := faults[i], h
		h = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if !f(w, r, next) {
				next.ServeHTTP(w, r)
			}
		})
	}
	return h
}

// Counter counts how often a fault fired.
type Counter struct{ n atomic.Int64 }

// N returns the count.
func (c *Counter) N() int64 {
	if c == nil {
		return 0
	}
	return c.n.Load()
}

// once lets a fault fire at most times times (times < 0: always).
type once struct {
	mu    sync.Mutex
	left  int
	fired *Counter
}

func (o *once) take() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.left == 0 {
		return false
	}
	if o.left > 0 {
		o.left--
	}
	if o.fired != nil {
		o.fired.n.Add(1)
	}
	return true
}

// FailStatus answers code (e.g. 500, 429) to the first times matching
// requests (times < 0: all of them). 429 answers carry Retry-After: 0.
func FailStatus(code, times int, match Match, fired ...*Counter) Fault {
	var h http.Header
	if code == http.StatusTooManyRequests {
		h = http.Header{"Retry-After": {"0"}}
	}
	return FailWith(code, h, times, match, fired...)
}

// FailWith answers code with the headers h (e.g. Retry-After) to the
// first times matching requests (times < 0: all of them).
func FailWith(code int, h http.Header, times int, match Match, fired ...*Counter) Fault {
	o := &once{left: times, fired: first(fired)}
	return func(w http.ResponseWriter, r *http.Request, _ http.Handler) bool {
		if !match(r) || !o.take() {
			return false
		}
		for k, v := range h {
			w.Header()[k] = v
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		fmt.Fprintf(w, `{"errors":[{"code":"UNKNOWN","message":"injected %d"}]}`, code)
		return true
	}
}

// CutBlob serves the first times blob GETs (ranged ones included) only up
// to after bytes of their body, then cuts the connection, the way a
// dropped link looks to the client (Content-Length promised more).
func CutBlob(after int64, times int, fired ...*Counter) Fault {
	o := &once{left: times, fired: first(fired)}
	return func(w http.ResponseWriter, r *http.Request, next http.Handler) bool {
		if !Blobs(r) || !o.take() {
			return false
		}
		cw := &cutWriter{ResponseWriter: w, left: after}
		func() {
			defer func() {
				if v := recover(); v != nil && v != http.ErrAbortHandler {
					panic(v)
				}
			}()
			next.ServeHTTP(cw, r)
		}()
		if cw.cut {
			// Abort the response: net/http closes the connection without
			// finishing the body.
			panic(http.ErrAbortHandler)
		}
		return true
	}
}

type cutWriter struct {
	http.ResponseWriter
	left int64
	cut  bool
}

func (c *cutWriter) Write(p []byte) (int, error) {
	if c.cut {
		return 0, fmt.Errorf("cut")
	}
	if int64(len(p)) > c.left {
		n, _ := c.ResponseWriter.Write(p[:c.left])
		if f, ok := c.ResponseWriter.(http.Flusher); ok {
			f.Flush()
		}
		c.left = 0
		c.cut = true
		return n, fmt.Errorf("cut")
	}
	c.left -= int64(len(p))
	return c.ResponseWriter.Write(p)
}

// CorruptBlob flips one byte in the body of every matching blob GET
// (times < 0) or the first times, keeping the length.
func CorruptBlob(times int, fired ...*Counter) Fault {
	return RewriteBody(Blobs, times, func(b []byte) []byte {
		if len(b) > 0 {
			b[len(b)/2] ^= 0xff
		}
		return b
	}, fired...)
}

// TruncateBlob serves matching blob GETs with their last byte missing and
// an honest Content-Length for the shorter body: a size mismatch.
func TruncateBlob(times int, fired ...*Counter) Fault {
	return RewriteBody(Blobs, times, func(b []byte) []byte {
		if len(b) > 0 {
			return b[:len(b)-1]
		}
		return b
	}, fired...)
}

// RewriteBody buffers the registry's answer to matching requests and
// serves edit(body) instead, with a Content-Length for the new body.
func RewriteBody(match Match, times int, edit func([]byte) []byte, fired ...*Counter) Fault {
	o := &once{left: times, fired: first(fired)}
	return func(w http.ResponseWriter, r *http.Request, next http.Handler) bool {
		if !match(r) || r.Header.Get("Range") != "" || !o.take() {
			return false
		}
		rec := &recorder{header: http.Header{}, code: http.StatusOK}
		next.ServeHTTP(rec, r)
		body := rec.buf.Bytes()
		if rec.code == http.StatusOK {
			body = edit(body)
		}
		for k, v := range rec.header {
			w.Header()[k] = v
		}
		w.Header().Del("Accept-Ranges") // the edited body cannot be ranged
		w.Header().Set("Content-Length", fmt.Sprint(len(body)))
		w.WriteHeader(rec.code)
		_, _ = w.Write(body)
		return true
	}
}

// Serve answers matching requests with fn instead of the registry.
func Serve(match Match, fn http.HandlerFunc) Fault {
	return func(w http.ResponseWriter, r *http.Request, _ http.Handler) bool {
		if !match(r) {
			return false
		}
		fn(w, r)
		return true
	}
}

type recorder struct {
	header http.Header
	code   int
	buf    bytes.Buffer
}

func (r *recorder) Header() http.Header         { return r.header }
func (r *recorder) WriteHeader(code int)        { r.code = code }
func (r *recorder) Write(p []byte) (int, error) { return r.buf.Write(p) }

func first(c []*Counter) *Counter {
	if len(c) > 0 {
		return c[0]
	}
	return nil
}

// Inc counts one (for faults written in tests).
func (c *Counter) Inc() { c.n.Add(1) }

// CorruptRanged flips the first byte of the body of the first times
// ranged blob GETs (times < 0: all), keeping the length: a wrong digest
// that only parallel or resumed downloads see.
func CorruptRanged(times int, fired ...*Counter) Fault {
	o := &once{left: times, fired: first(fired)}
	return func(w http.ResponseWriter, r *http.Request, next http.Handler) bool {
		if !Blobs(r) || r.Header.Get("Range") == "" || !o.take() {
			return false
		}
		next.ServeHTTP(&flipWriter{ResponseWriter: w}, r)
		return true
	}
}

type flipWriter struct {
	http.ResponseWriter
	done bool
}

func (f *flipWriter) Write(p []byte) (int, error) {
	if !f.done && len(p) > 0 {
		q := append([]byte(nil), p...)
		q[0] ^= 0xff
		f.done = true
		return f.ResponseWriter.Write(q)
	}
	return f.ResponseWriter.Write(p)
}
