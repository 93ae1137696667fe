package ocitest

import (
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"testing"
)

// IgnoreRange makes the registry answer blob GETs as if it did not know
// HTTP Range: the whole blob with 200, whatever was asked for (times < 0:
// always).
func IgnoreRange(times int, fired ...*Counter) Fault {
	o := &once{left: times, fired: first(fired)}
	return func(w http.ResponseWriter, r *http.Request, next http.Handler) bool {
		if !Blobs(r) || r.Header.Get("Range") == "" || !o.take() {
			return false
		}
		r = r.Clone(r.Context())
		r.Header.Del("Range")
		next.ServeHTTP(w, r)
		return true
	}
}

// CutBlobRanged is CutBlob for blob GETs with a Range header only: the
// parts a delta download fetches, and the resumes of a cut download.
func CutBlobRanged(after int64, times int, fired ...*Counter) Fault {
	cut := CutBlob(after, times, fired...)
	return func(w http.ResponseWriter, r *http.Request, next http.Handler) bool {
		return r.Header.Get("Range") != "" && cut(w, r, next)
	}
}

// CorruptRange flips one byte in the middle of the body of blob GETs with
// a Range header (times < 0: all), keeping the length: a registry or
// cache that serves wrong bytes for a part of a blob.
func CorruptRange(times int, fired ...*Counter) Fault {
	o := &once{left: times, fired: first(fired)}
	return func(w http.ResponseWriter, r *http.Request, next http.Handler) bool {
		if !Blobs(r) || r.Header.Get("Range") == "" || !o.take() {
			return false
		}
		rec := &recorder{header: http.Header{}, code: http.StatusOK}
		next.ServeHTTP(rec, r)
		body := rec.buf.Bytes()
		if len(body) > 0 {
			body[len(body)/2] ^= 0xff
		}
		for k, v := range rec.header {
			w.Header()[k] = v
		}
		w.WriteHeader(rec.code)
		_, _ = w.Write(body)
		return true
	}
}

// Proxy puts a reverse proxy with faults in front of reg (the
// distribution binary, which runs in its own process): the faults, and a
// Served, see every request. The returned Registry is the proxy's.
func Proxy(t testing.TB, reg *Registry, faults ...Fault) *Registry {
	t.Helper()
	u, err := url.Parse(reg.URL)
	if err != nil {
		t.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.FlushInterval = -1 // stream blobs as they come
	srv := httptest.NewServer(Faulty(rp, faults...))
	t.Cleanup(srv.Close)
	return &Registry{Host: strings.TrimPrefix(srv.URL, "http://"), URL: srv.URL, Dir: reg.Dir, Referrers: reg.Referrers}
}
