package oci_test

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sysext/sysext/ingest"
	"github.com/sysext/sysext/internal/testenv"
	"github.com/sysext/sysext/oci"
	"github.com/sysext/sysext/oci/ocitest"
)

// downloadParallel downloads p's image into a fresh directory with the
// parallel ranges forced on and checks it is the pushed file.
func downloadParallel(t *testing.T, p pushed) *oci.Downloaded {
	t.Helper()
	oci.ForceParallel(t)
	dir := testenv.TempDirNoLeak(t, ".#")
	d, err := oci.Download(context.Background(), p.tg, &p.r.Entry, oci.DownloadOptions{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	samePushed(t, p, d.Path, "the parallel download")
	return d
}

// samePushed fails t unless the file at path holds p's pushed bytes.
func samePushed(t *testing.T, p pushed, path, what string) {
	t.Helper()
	want, _ := os.ReadFile(p.file)
	got, _ := os.ReadFile(path)
	if !bytes.Equal(want, got) {
		t.Fatalf("%s differs from the pushed file", what)
	}
}

// ranged counts the blob GETs with a Range header.
func ranged(s *ocitest.Served) int {
	n := 0
	for _, r := range s.Ranges() {
		if strings.HasPrefix(r, "bytes=") {
			n++
		}
	}
	return n
}

// A large download hands over to parallel ranges: several requests, the
// bytes sent once each, the file identical.
func TestDownloadParallel(t *testing.T) {
	var served ocitest.Served
	reg := ocitest.NewOlareg(t, served.Fault())
	p := pushImage(t, reg, 40<<20)
	served.Reset()
	downloadParallel(t, p)
	if ranged(&served) < 4 || served.MaxInFlight() < 2 {
		t.Fatalf("%d ranged requests, %d at once: not parallel", ranged(&served), served.MaxInFlight())
	}
	// The single stream was cut short at the handover: at most what
	// was in flight then is sent twice. That is what the socket buffers
	// held when the stream closed: the sender's (tcp_wmem, 4 MiB here)
	// and the receiver's, which the kernel grows while the reader keeps
	// up (to 32 MiB here); 9.4 MiB was seen on a loaded machine. A stream
	// that did not stop would send about the rest of the image again.
	served.Settle()
	if extra := served.Bytes() - p.r.Entry.Layer.Size; extra < 0 || extra > 16<<20 {
		t.Fatalf("served %d bytes for %d", served.Bytes(), p.r.Entry.Layer.Size)
	}
}

// The existing faults, on the parallel path: cuts, 429/5xx, a wrong digest.
func TestDownloadParallelFaults(t *testing.T) {
	t.Run("cuts", func(t *testing.T) {
		var cuts ocitest.Counter
		reg, on := faultyReg(t, ocitest.CutBlob(300<<10, 4, &cuts))
		p := pushImage(t, reg, 24<<20)
		*on = true
		downloadParallel(t, p)
		if cuts.N() != 4 {
			t.Fatalf("%d cuts", cuts.N())
		}
	})
	for _, code := range []int{429, 500} {
		t.Run(http.StatusText(code), func(t *testing.T) {
			var n ocitest.Counter
			fail := ocitest.FailStatus(code, 2, func(r *http.Request) bool { return ocitest.Blobs(r) && r.Header.Get("Range") != "" }, &n)
			reg, on := faultyReg(t, fail)
			p := pushImage(t, reg, 24<<20)
			*on = true
			downloadParallel(t, p)
			if n.N() != 2 {
				t.Fatalf("fault fired %d times", n.N())
			}
		})
	}
	t.Run("wrong digest", func(t *testing.T) {
		var fired ocitest.Counter
		reg, on := faultyReg(t, ocitest.CorruptRanged(1, &fired))
		p := pushImage(t, reg, 24<<20)
		*on = true
		oci.ForceParallel(t)
		dir := testenv.TempDirNoLeak(t, ".#")
		_, err := oci.Download(context.Background(), p.tg, &p.r.Entry, oci.DownloadOptions{Dir: dir})
		if err == nil || !strings.Contains(err.Error(), "do not match the digest") || fired.N() != 1 {
			t.Fatalf("got %v (fault fired %d times)", err, fired.N())
		}
		emptyDir(t, dir)
	})
	t.Run("cuts forever", func(t *testing.T) {
		cut := ocitest.CutBlob(10<<10, -1)
		reg, on := faultyReg(t, func(w http.ResponseWriter, r *http.Request, next http.Handler) bool {
			return r.Header.Get("Range") != "" && cut(w, r, next)
		})
		p := pushImage(t, reg, 24<<20)
		*on = true
		oci.ForceParallel(t)
		dir := testenv.TempDirNoLeak(t, ".#")
		_, err := oci.Download(context.Background(), p.tg, &p.r.Entry, oci.DownloadOptions{Dir: dir, MaxResumes: 2})
		if err == nil || !strings.Contains(err.Error(), "after 2 retries") {
			t.Fatalf("got %v", err)
		}
		emptyDir(t, dir)
	})
}

// A server that ignores Range: the parallel ranges give way to one
// stream, and the download still succeeds.
func TestDownloadParallelServerIgnoresRange(t *testing.T) {
	reg, on := faultyReg(t, ocitest.IgnoreRange(-1))
	p := pushImage(t, reg, 24<<20)
	*on = true
	downloadParallel(t, p)
}

// A parallel download into an ingest stopped partway keeps what arrived,
// in order or not; the next one fetches only the missing parts.
func TestDownloadParallelResumesMissingParts(t *testing.T) {
	var served ocitest.Served
	reg := ocitest.NewOlareg(t, served.Fault())
	p := pushImage(t, reg, 40<<20)
	layer := p.r.Entry.Layer
	dir := filepath.Join(t.TempDir(), "ingest")
	oci.ForceParallel(t)
	w := stopAtHalf(t, p.tg, &p.r.Entry, dir)
	miss := w.Missing()
	var missing int64
	for _, m := range miss {
		missing += m.End - m.Off
	}
	if len(miss) < 2 || missing >= layer.Size/2+8<<20 {
		t.Fatalf("missing %v (%d bytes): the stopped download did not keep its parts", miss, missing)
	}
	served.Reset()
	d, err := oci.Download(context.Background(), p.tg, &p.r.Entry, oci.DownloadOptions{Into: w})
	if err != nil {
		t.Fatal(err)
	}
	served.Settle()
	// What was missing, and at most the stream's writes in flight again
	// (8 buffers of 1 MiB): when the holes look like a stopped stream's,
	// the rerun streams from the first hole over them (streamHoles).
	const inFlight = 8 << 20
	if served.Bytes() < missing || served.Bytes() > missing+inFlight || d.Reused < layer.Size-missing-inFlight {
		t.Fatalf("served %d bytes, reused %d; want %d (+ up to %d) and %d", served.Bytes(), d.Reused, missing, inFlight, layer.Size-missing)
	}
	samePushed(t, p, w.Name(), "the resumed download")
}

// A fetch stopped while its parallel ranges run (several requests in
// flight, parts written out of order) says why and leaves nothing in the
// directory; the next fetch there gets the whole image.
func TestDownloadParallelCancelledLeavesNothing(t *testing.T) {
	var served ocitest.Served
	reg := ocitest.NewOlareg(t, served.Fault())
	p := pushImage(t, reg, 40<<20)
	oci.ForceParallel(t)
	dir := testenv.TempDirNoLeak(t, ".#")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	_, err := oci.Download(ctx, p.tg, &p.r.Entry, oci.DownloadOptions{Dir: dir, Progress: func(done, total int64) {
		if done >= total/2 {
			cancel()
		}
	}})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v, want context.Canceled", err)
	}
	if ranged(&served) < 2 {
		t.Fatalf("%d ranged requests: the fetch did not go parallel", ranged(&served))
	}
	emptyDir(t, dir)
	d, err := oci.Download(context.Background(), p.tg, &p.r.Entry, oci.DownloadOptions{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	samePushed(t, p, d.Path, "the fetch after the stopped one")
}

// stopAtHalf downloads e from tg into a new ingest in dir, stops once
// half of it is written, and opens the ingest again: what a stopped
// download leaves for the next one. The writer is closed when the test
// ends.
func stopAtHalf(t *testing.T, tg oci.Target, e *oci.Entry, dir string) *ingest.Writer {
	t.Helper()
	layer := e.Layer
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w, err := ingest.Open(ctx, dir, layer.Size, layer.Digest)
	if err != nil {
		t.Fatal(err)
	}
	_, err = oci.Download(ctx, tg, e, oci.DownloadOptions{Into: w, Progress: func(done, total int64) {
		if done >= total/2 {
			cancel()
		}
	}})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v, want context.Canceled", err)
	}
	w.Close()
	w, err = ingest.Open(context.Background(), dir, layer.Size, layer.Digest)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	return w
}
