package recipe

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/ulikunitz/xz"
)

// Fixtures shaped like upstream downloads, made by the tests: archives with
// the upstream's layout and names holding tiny shell scripts in place of
// the real programs, and checksum files in the upstream's own format.

type member struct {
	name string
	body string
	mode int64
	link string // symlink target when set
	hard string // hard link target when set
	dir  bool
}

func script(name, version string) string {
	return fmt.Sprintf("#!/bin/sh\necho \"%s fixture %s\"\n", name, version)
}

func exe(name, body string) member  { return member{name: name, body: body, mode: 0o755} }
func file(name, body string) member { return member{name: name, body: body, mode: 0o644} }

func tarOf(t testing.TB, ms []member) []byte {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for _, m := range ms {
		h := &tar.Header{Name: m.name, Mode: m.mode, Size: int64(len(m.body)), Typeflag: tar.TypeReg}
		switch {
		case m.dir:
			h.Typeflag, h.Size, h.Mode = tar.TypeDir, 0, 0o755
		case m.link != "":
			h.Typeflag, h.Size, h.Linkname, h.Mode = tar.TypeSymlink, 0, m.link, 0o777
		case m.hard != "":
			h.Typeflag, h.Size, h.Linkname = tar.TypeLink, 0, m.hard
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			if _, err := tw.Write([]byte(m.body)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func tgz(t testing.TB, ms ...member) []byte {
	t.Helper()
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	zw.Write(tarOf(t, ms))
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func txz(t testing.TB, ms ...member) []byte {
	t.Helper()
	var b bytes.Buffer
	xw, err := xz.NewWriter(&b)
	if err != nil {
		t.Fatal(err)
	}
	xw.Write(tarOf(t, ms))
	if err := xw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func zipOf(t testing.TB, ms ...member) []byte {
	t.Helper()
	var b bytes.Buffer
	zw := zip.NewWriter(&b)
	for _, m := range ms {
		h := &zip.FileHeader{Name: m.name, Method: zip.Deflate}
		h.SetMode(0o755)
		w, err := zw.CreateHeader(h)
		if err != nil {
			t.Fatal(err)
		}
		w.Write([]byte(m.body))
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func sum(data []byte) string {
	h := sha256.Sum256(data)
	return hex.EncodeToString(h[:])
}

// upstream is a fake set of upstream hosts behind one HTTP server, reached
// through --mirror: https://HOST/PATH is served at /HOST/PATH.
type upstream struct {
	mu       sync.Mutex
	files    map[string][]byte // "https://host/path" -> content
	faults   map[string]string // URL -> "404", "500", "cut"
	requests map[string]int
	srv      *httptest.Server
}

func newUpstream(t testing.TB) *upstream {
	u := &upstream{files: map[string][]byte{}, faults: map[string]string{}, requests: map[string]int{}}
	u.srv = httptest.NewServer(http.HandlerFunc(u.serve))
	t.Cleanup(u.srv.Close)
	return u
}

func (u *upstream) mirror() string { return u.srv.URL + "/" }

func (u *upstream) add(url string, data []byte) { u.mu.Lock(); u.files[url] = data; u.mu.Unlock() }

func (u *upstream) fault(url, kind string) { u.mu.Lock(); u.faults[url] = kind; u.mu.Unlock() }

func (u *upstream) count(url string) int { u.mu.Lock(); defer u.mu.Unlock(); return u.requests[url] }

func (u *upstream) serve(w http.ResponseWriter, r *http.Request) {
	url := "https://" + strings.TrimPrefix(r.URL.EscapedPath(), "/")
	u.mu.Lock()
	u.requests[url]++
	data, ok := u.files[url]
	fault := u.faults[url]
	u.mu.Unlock()
	switch {
	case fault == "500":
		http.Error(w, "upstream is sad", http.StatusInternalServerError)
		return
	case !ok || fault == "404":
		http.NotFound(w, r)
		return
	case fault == "cut":
		// Promise everything, send half: the client sees the connection
		// close early.
		w.Header().Set("Content-Length", fmt.Sprint(len(data)))
		w.WriteHeader(http.StatusOK)
		w.Write(data[:len(data)/2])
		return
	}
	w.Header().Set("Content-Length", fmt.Sprint(len(data)))
	w.Write(data)
}
