package oci_test

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"github.com/opencontainers/go-digest"
	"github.com/sysext/sysext/ingest"
	"github.com/sysext/sysext/oci"
	"github.com/sysext/sysext/oci/ocitest"
)

// A Writer that already holds the first part of the layer (an ingest a
// killed pull left) gets only the rest: one Range request from its Offset
// (not a whole-blob GET first), and the bytes before it are not sent
// again.
func TestDownloadIntoResumesAtOffset(t *testing.T) {
	var served ocitest.Served
	reg := ocitest.NewOlareg(t, served.Fault())
	p := pushImage(t, reg, 8<<20)
	want, err := os.ReadFile(p.file)
	if err != nil {
		t.Fatal(err)
	}
	size := int64(len(want))
	dir := filepath.Join(t.TempDir(), "ingest")
	half := size / 2
	prefill(t, dir, want, half)

	w, err := ingest.Open(context.Background(), dir, size, p.r.Entry.Layer.Digest)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if w.Offset() != half {
		t.Fatalf("the ingest resumes at %d, want %d", w.Offset(), half)
	}
	served.Reset()
	var first int64 = -1
	d, err := oci.Download(context.Background(), p.tg, &p.r.Entry, oci.DownloadOptions{Into: w, Progress: func(done, _ int64) {
		if first < 0 {
			first = done
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	if d.Reused != half || first <= half {
		t.Fatalf("reused %d (want %d), first progress at %d", d.Reused, half, first)
	}
	if got, _ := os.ReadFile(w.Name()); !bytes.Equal(got, want) {
		t.Fatal("the resumed file differs from the pushed one")
	}
	rs := served.Ranges()
	if len(rs) != 1 || rs[0] != fmt.Sprintf("bytes=%d-%d", half, size-1) {
		t.Fatalf("range requests %q, want one from %d", rs, half)
	}
	served.Settle()
	if served.Bytes() != size-half {
		t.Fatalf("served %d bytes for the %d missing", served.Bytes(), size-half)
	}
}

// A registry that does not do Range: the bytes the Writer holds are read
// and dropped, not written or hashed again, and the result is the same.
func TestDownloadIntoWithoutRange(t *testing.T) {
	on := false
	reg := ocitest.NewOlareg(t, func(w http.ResponseWriter, r *http.Request, next http.Handler) bool {
		if !on || !ocitest.Blobs(r) {
			return false
		}
		r.Header.Del("Range")
		w.Header().Set("Accept-Ranges", "none")
		next.ServeHTTP(w, r)
		return true
	})
	p := pushImage(t, reg, 3<<20)
	on = true
	want, _ := os.ReadFile(p.file)
	dir := filepath.Join(t.TempDir(), "ingest")
	prefill(t, dir, want, int64(len(want))/3)
	w, err := ingest.Open(context.Background(), dir, int64(len(want)), p.r.Entry.Layer.Digest)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if _, err := oci.Download(context.Background(), p.tg, &p.r.Entry, oci.DownloadOptions{Into: w}); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(w.Name()); !bytes.Equal(got, want) {
		t.Fatal("the file differs from the pushed one")
	}
}

// A resumed download that is cut again resumes again (a new Range request
// from where it stopped).
func TestDownloadIntoCutAfterResume(t *testing.T) {
	var cuts ocitest.Counter
	on := false
	cut := ocitest.CutBlob(300<<10, 1, &cuts)
	reg := ocitest.NewOlareg(t, func(w http.ResponseWriter, r *http.Request, next http.Handler) bool {
		return on && cut(w, r, next)
	})
	p := pushImage(t, reg, 2<<20)
	want, _ := os.ReadFile(p.file)
	dir := filepath.Join(t.TempDir(), "ingest")
	prefill(t, dir, want, 1<<20)
	w, err := ingest.Open(context.Background(), dir, int64(len(want)), p.r.Entry.Layer.Digest)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	on = true
	d, err := oci.Download(context.Background(), p.tg, &p.r.Entry, oci.DownloadOptions{Into: w})
	if err != nil {
		t.Fatal(err)
	}
	if cuts.N() != 1 || d.Resumes != 1 {
		t.Fatalf("cuts %d, resumes %d", cuts.N(), d.Resumes)
	}
	if got, _ := os.ReadFile(w.Name()); !bytes.Equal(got, want) {
		t.Fatal("the file differs from the pushed one")
	}
}

// prefill leaves in dir what a pull killed after n bytes leaves.
func prefill(t *testing.T, dir string, b []byte, n int64) {
	t.Helper()
	w, err := ingest.Open(context.Background(), dir, int64(len(b)), digestOf(b))
	if err != nil {
		t.Fatal(err)
	}
	for off := int64(0); off < n; off += 1 << 20 {
		end := min(off+1<<20, n)
		if _, err := w.WriteAt(b[off:end], off); err != nil {
			t.Fatal(err)
		}
		w.HashAt(b[off:end], off)
	}
	w.Close()
}

func digestOf(b []byte) digest.Digest { return digest.FromBytes(b) }
