package oci_test

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sysext/sysext/internal/testenv"
	"github.com/sysext/sysext/oci"
	"github.com/sysext/sysext/oci/ocitest"
)

// downloadThrough downloads m's image through its mirrors into a fresh
// directory and checks the file is the pushed one.
func downloadThrough(t *testing.T, m *mirrored, opts oci.DownloadOptions) (oci.Target, *oci.Downloaded) {
	t.Helper()
	ctx := context.Background()
	tg, err := oci.Open(ctx, m.p.ref, m.opts)
	if err != nil {
		t.Fatal(err)
	}
	opts.Dir = testenv.TempDirNoLeak(t, ".#")
	d, err := oci.Download(ctx, tg, &m.p.r.Entry, opts)
	if err != nil {
		t.Fatalf("%v\n%s", err, m.log())
	}
	samePushed(t, m.p, d.Path, "the download through the mirror")
	return tg, d
}

// A large download through a mirror that serves ranges hands over to
// parallel ranges as from a registry: several requests at the mirror at
// once, none at the origin, the file identical. Before, the mirror was
// streamed with one connection.
func TestDownloadParallelThroughMirror(t *testing.T) {
	m := newMirroredSize(t, 24<<20, "")
	var served ocitest.Served
	mir := mirrorOf(t, m, served.Fault())
	m = withMirrors(t, m, mir.Host)
	served.Reset()
	oci.ForceParallel(t)
	tg, _ := downloadThrough(t, m, oci.DownloadOptions{})
	served.Settle()
	m.served.Settle()
	t.Logf("the mirror answered %d blob GETs (%d ranged, %d at once), sent %d; the origin sent %d", served.Requests(), ranged(&served), served.MaxInFlight(), served.Bytes(), m.served.Bytes())
	if ranged(&served) < 4 || served.MaxInFlight() < 2 {
		t.Fatalf("%d ranged requests at the mirror, %d at once: not parallel", ranged(&served), served.MaxInFlight())
	}
	if m.served.Requests() != 0 || m.log() != "" {
		t.Fatalf("origin blob requests %d, log %q", m.served.Requests(), m.log())
	}
	if by := servedBy(oci.SourceEvents(tg))["layer"]; !strings.HasPrefix(by, mir.Host) {
		t.Fatalf("layer served by %q, want the mirror", by)
	}
}

// A mirror whose parallel ranges keep failing mid-way hands what it did
// not write to the origin, in one line: the file is identical, the origin
// sends only the rest, nothing is left behind. Before, the mirror was
// streamed and no range was asked of it.
func TestDownloadParallelThroughMirrorFails(t *testing.T) {
	m := newMirroredSize(t, 24<<20, "")
	var served ocitest.Served
	var cuts ocitest.Counter
	mir := mirrorOf(t, m, served.Fault(), ocitest.CutBlobRanged(256<<10, -1, &cuts))
	m = withMirrors(t, m, mir.Host)
	served.Reset()
	oci.ForceParallel(t)
	tg, d := downloadThrough(t, m, oci.DownloadOptions{MaxResumes: 1})
	served.Settle()
	m.served.Settle()
	size := m.p.r.Entry.Layer.Size
	t.Logf("the mirror answered %d blob GETs (%d ranged, %d cut), sent %d; the origin sent %d in %d; of %d\n%s", served.Requests(), ranged(&served), cuts.N(), served.Bytes(), m.served.Bytes(), m.served.Requests(), size, m.log())
	if cuts.N() == 0 {
		t.Fatal("no range was asked of the mirror")
	}
	// The origin sends the rest: not all of it (the mirror's stream and
	// its parts before the cut stay), and nothing twice.
	if m.served.Bytes() == 0 || m.served.Bytes() >= size {
		t.Fatalf("the origin sent %d bytes of %d", m.served.Bytes(), size)
	}
	if log := m.log(); strings.Count(log, "\n") != 0 || !strings.Contains(log, "trying "+m.origin.Host) {
		t.Fatalf("want one line handing over to the origin:\n%s", log)
	}
	if by := servedBy(oci.SourceEvents(tg))["layer"]; !strings.HasPrefix(by, m.origin.Host) {
		t.Fatalf("layer finished by %q, want the origin", by)
	}
	if d.Fetched != size {
		t.Fatalf("fetched %d of %d", d.Fetched, size)
	}
}

// A cold pull-through cache streams a blob it does not hold from its
// upstream without offering ranges: the node reads it to its end (no
// handover), so the cache keeps its copy and the origin sends it once.
// Warm, the cache serves ranges and the next download goes parallel, the
// origin sending nothing.
func TestDownloadParallelThroughPullThroughCache(t *testing.T) {
	m := newMirroredSize(t, 24<<20, "")
	cache := ocitest.StartDistributionProxy(t, m.origin, 0)
	var served ocitest.Served
	front, _ := ocitest.Front(t, cache, served.Fault())
	m = withMirrors(t, m, front.Host)
	oci.ForceParallel(t)
	size := m.p.r.Entry.Layer.Size
	for _, warm := range []bool{false, true} {
		served.Reset()
		m.served.Reset()
		tg, _ := downloadThrough(t, m, oci.DownloadOptions{})
		served.Settle()
		m.served.Settle()
		t.Logf("warm %v: the cache answered %d blob GETs (%d ranged, %d at once), sent %d; the origin sent %d; of %d\n%s", warm, served.Requests(), ranged(&served), served.MaxInFlight(), served.Bytes(), m.served.Bytes(), size, m.log())
		if by := servedBy(oci.SourceEvents(tg))["layer"]; !strings.HasPrefix(by, front.Host) {
			t.Fatalf("warm %v: layer served by %q, want the cache", warm, by)
		}
		if m.log() != "" {
			t.Fatalf("warm %v: %s", warm, m.log())
		}
		// The config blob and the layer, once.
		if !warm && m.served.Bytes() > size+64<<10 {
			t.Fatalf("cold: the origin sent %d bytes for a layer of %d", m.served.Bytes(), size)
		}
		if warm && (m.served.Bytes() != 0 || ranged(&served) < 4) {
			t.Fatalf("warm: the origin sent %d bytes, the cache answered %d ranges", m.served.Bytes(), ranged(&served))
		}
	}
}

// FetchHead through mirrors asks the sources in order: one that lacks the
// blob or fails hands over to the next in one line; one that answers the
// Range with the whole blob ends the read-ahead (ErrRangeUnsupported),
// its answer closed unread, the origin not asked. Before, FetchHead
// through mirrors never asked (ErrRangeUnsupported).
func TestFetchHeadThroughMirrors(t *testing.T) {
	for _, tc := range []struct {
		name    string
		fault   ocitest.Fault
		noCopy  bool
		origin  bool // the head comes from the origin
		refused bool // ErrRangeUnsupported
	}{
		{name: "served"},
		{name: "lacks the blob", noCopy: true, origin: true},
		{name: "fails", fault: ocitest.FailStatus(http.StatusBadGateway, -1, ocitest.Blobs), origin: true},
		{name: "whole answer", fault: ocitest.IgnoreRange(-1), refused: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := newMirrored(t, "")
			var served ocitest.Served
			faults := []ocitest.Fault{served.Fault()}
			if tc.fault != nil {
				faults = append(faults, tc.fault)
			}
			var mir *ocitest.Registry
			if tc.noCopy {
				mir = ocitest.NewOlareg(t, faults...)
			} else {
				mir = mirrorOf(t, m, faults...)
			}
			m = withMirrors(t, m, mir.Host)
			served.Reset()
			ctx := context.Background()
			tg, err := oci.Open(ctx, m.p.ref, m.opts)
			if err != nil {
				t.Fatal(err)
			}
			layer := m.p.r.Entry.Layer
			head, err := oci.FetchHead(ctx, tg, layer, 4096)
			served.Settle()
			m.served.Settle()
			t.Logf("the mirror answered %d blob GETs; the origin %d (%q); log:\n%s", served.Requests(), m.served.Requests(), m.served.Ranges(), m.log())
			if served.Requests() != 1 {
				t.Fatalf("the mirror answered %d blob GETs, want 1", served.Requests())
			}
			if tc.refused {
				if !errors.Is(err, oci.ErrRangeUnsupported) || m.served.Requests() != 0 {
					t.Fatalf("got %v, %d requests at the origin; want ErrRangeUnsupported and none", err, m.served.Requests())
				}
				return
			}
			if err != nil || !bytes.Equal(head, pushedBlob(t, m.p)[:4096]) {
				t.Fatalf("FetchHead = %d bytes, %v", len(head), err)
			}
			want := int64(0)
			if tc.origin {
				want = 1
				if rg := m.origin.Host; strings.Count(m.log(), "trying "+rg) != 1 || strings.Count(m.log(), "\n") != 0 {
					t.Fatalf("want one line handing over to the origin:\n%s", m.log())
				}
			} else if m.log() != "" {
				t.Fatalf("log: %s", m.log())
			}
			if m.served.Requests() != want {
				t.Fatalf("the origin answered %d blob GETs, want %d", m.served.Requests(), want)
			}
			if want == 1 && m.served.Bytes() != 4096 {
				t.Fatalf("the origin sent %d bytes for the head", m.served.Bytes())
			}
		})
	}
}

// stallThenCut serves a non-ranged blob GET (the stream) up to after
// bytes, then holds it until a ranged GET arrives (the stream handed
// over) and cuts it: the stream fails after the handover, whenever the
// handover came.
func stallThenCut(after int64) ocitest.Fault {
	seen := make(chan struct{})
	var once sync.Once
	return func(w http.ResponseWriter, r *http.Request, next http.Handler) bool {
		if !ocitest.Blobs(r) {
			return false
		}
		if r.Header.Get("Range") != "" {
			once.Do(func() { close(seen) })
			return false
		}
		sw := &stallWriter{ResponseWriter: w, left: after, seen: seen, done: r.Context().Done()}
		func() {
			defer func() {
				if v := recover(); v != nil && v != http.ErrAbortHandler {
					panic(v)
				}
			}()
			next.ServeHTTP(sw, r)
		}()
		if sw.cut {
			panic(http.ErrAbortHandler)
		}
		return true
	}
}

type stallWriter struct {
	http.ResponseWriter
	left       int64
	cut        bool
	seen, done <-chan struct{}
}

func (s *stallWriter) Write(p []byte) (int, error) {
	if s.cut {
		return 0, errors.New("cut")
	}
	if int64(len(p)) <= s.left {
		s.left -= int64(len(p))
		return s.ResponseWriter.Write(p)
	}
	n, _ := s.ResponseWriter.Write(p[:s.left])
	s.ResponseWriter.(http.Flusher).Flush()
	// A stream that never hands over (the bug) is cut after 10 s, and
	// the test fails on the count of ranged requests.
	select {
	case <-s.seen:
	case <-s.done:
	case <-time.After(10 * time.Second):
	}
	s.left, s.cut = 0, true
	return n, errors.New("cut")
}

// A mirror's stream cut after it handed over (its parallel ranges under
// way) stops them; what is missing comes from the origin, in one line,
// the file identical, nothing left behind.
func TestDownloadParallelThroughMirrorStreamCut(t *testing.T) {
	m := newMirroredSize(t, 24<<20, "")
	var served ocitest.Served
	mir := mirrorOf(t, m, served.Fault(), stallThenCut(1<<20))
	m = withMirrors(t, m, mir.Host)
	served.Reset()
	oci.ForceParallel(t)
	tg, _ := downloadThrough(t, m, oci.DownloadOptions{MaxResumes: -1})
	served.Settle()
	m.served.Settle()
	size := m.p.r.Entry.Layer.Size
	t.Logf("the mirror answered %d blob GETs (%d ranged), sent %d; the origin sent %d in %d; of %d\n%s", served.Requests(), ranged(&served), served.Bytes(), m.served.Bytes(), m.served.Requests(), size, m.log())
	if ranged(&served) == 0 {
		t.Fatal("the mirror's stream did not hand over")
	}
	// The origin streams from the first hole on (it hands over too): the
	// rest, and what its socket buffers held at its own handover
	// (TestDownloadParallel).
	if m.served.Bytes() == 0 || m.served.Bytes() > size+16<<20 {
		t.Fatalf("the origin sent %d bytes of %d", m.served.Bytes(), size)
	}
	if log := m.log(); strings.Count(log, "\n") != 0 || !strings.Contains(log, "trying "+m.origin.Host) {
		t.Fatalf("want one line handing over to the origin:\n%s", log)
	}
	if by := servedBy(oci.SourceEvents(tg))["layer"]; !strings.HasPrefix(by, m.origin.Host) {
		t.Fatalf("layer finished by %q, want the origin", by)
	}
}

// A parallel download through a mirror into an ingest, stopped partway,
// keeps its parts; the next one asks the mirror only for the missing
// ones, the origin for nothing.
func TestDownloadParallelThroughMirrorResumesMissingParts(t *testing.T) {
	m := newMirroredSize(t, 40<<20, "")
	var served ocitest.Served
	mir := mirrorOf(t, m, served.Fault())
	m = withMirrors(t, m, mir.Host)
	oci.ForceParallel(t)
	layer := m.p.r.Entry.Layer
	dir := filepath.Join(t.TempDir(), "ingest")
	tg, err := oci.Open(context.Background(), m.p.ref, m.opts)
	if err != nil {
		t.Fatal(err)
	}
	w := stopAtHalf(t, tg, &m.p.r.Entry, dir)
	var missing int64
	parts := len(w.Missing())
	for _, r := range w.Missing() {
		missing += r.End - r.Off
	}
	if parts < 2 || missing >= layer.Size/2+8<<20 {
		t.Fatalf("missing %v (%d bytes): the stopped download did not keep its parts", w.Missing(), missing)
	}
	served.Reset()
	m.served.Reset()
	tg, err = oci.Open(context.Background(), m.p.ref, m.opts)
	if err != nil {
		t.Fatal(err)
	}
	d, err := oci.Download(context.Background(), tg, &m.p.r.Entry, oci.DownloadOptions{Into: w})
	if err != nil {
		t.Fatal(err)
	}
	served.Settle()
	m.served.Settle()
	t.Logf("missing %d in %d parts; the mirror sent %d in %d GETs, the origin %d; reused %d", missing, parts, served.Bytes(), served.Requests(), m.served.Bytes(), d.Reused)
	// What was missing and, when the holes look like a stopped stream's
	// (the rerun streams from the first hole over them), the stream's
	// writes in flight (8 MiB) and what its socket buffers held when it
	// handed over at once (TestDownloadParallel).
	const inFlight = 8<<20 + 16<<20
	if served.Bytes() < missing || served.Bytes() > missing+inFlight || m.served.Bytes() != 0 {
		t.Fatalf("the mirror sent %d bytes, the origin %d; want %d (+ up to %d) and 0", served.Bytes(), m.served.Bytes(), missing, inFlight)
	}
	samePushed(t, m.p, w.Name(), "the resumed download")
}
