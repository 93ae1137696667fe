package oci_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/sysext/sysext/oci"
	"github.com/sysext/sysext/oci/ocitest"
)

// memWriter is an io.WriterAt over a byte slice, safe for parallel calls
// at distinct offsets.
type memWriter struct {
	mu  sync.Mutex
	buf []byte
}

func (m *memWriter) WriteAt(p []byte, off int64) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return copy(m.buf[off:], p), nil
}

// rangedBlob pushes size random bytes as a blob to reg (behind the switch
// on) and returns them with the target and the blob's descriptor.
func rangedBlob(t *testing.T, reg *ocitest.Registry, size int) ([]byte, oci.Target, ocispec.Descriptor) {
	t.Helper()
	data := make([]byte, size)
	rand.Read(data)
	tg, _ := reg.Open(t, "ext/blob:1")
	ocitest.PushRaw(t, tg, "1", data, "application/octet-stream", "", nil, nil)
	d, err := tg.Resolve(context.Background(), "1")
	if err != nil {
		t.Fatal(err)
	}
	b, err := oci.FetchManifest(context.Background(), tg, d)
	if err != nil {
		t.Fatal(err)
	}
	var m ocispec.Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return data, tg, m.Layers[0]
}

// switchable lets a fault act only once on is set (after the push).
func switchable(on *atomic.Bool, f ocitest.Fault) ocitest.Fault {
	return func(w http.ResponseWriter, r *http.Request, next http.Handler) bool {
		return on.Load() && f(w, r, next)
	}
}

// checkRanges says whether w holds data's bytes in each range, and zeros
// elsewhere.
func checkRanges(t *testing.T, data, got []byte, rs []oci.Range) {
	t.Helper()
	want := make([]byte, len(data))
	for _, r := range rs {
		copy(want[r.Off:r.Off+r.Len], data[r.Off:])
	}
	if !bytes.Equal(got, want) {
		t.Fatal("the bytes written are not the ranges' bytes")
	}
}

// FetchRanges asks for each range with one single-range request and
// writes exactly those bytes; the registry sends nothing else.
func TestFetchRanges(t *testing.T) {
	var served ocitest.Served
	reg := ocitest.NewOlareg(t, served.Fault())
	data, tg, layer := rangedBlob(t, reg, 3<<20)
	rs := []oci.Range{{Off: 0, Len: 1000}, {Off: 5000, Len: 70000}, {Off: 1 << 20, Len: 1 << 20}, {Off: 3<<20 - 10, Len: 10}}
	served.Reset()
	w := &memWriter{buf: make([]byte, len(data))}
	var progress int64
	n, err := oci.FetchRanges(context.Background(), tg, layer, rs, w, oci.RangeOptions{Progress: func(k int64) { progress += k }})
	if err != nil {
		t.Fatal(err)
	}
	var total int64
	for _, r := range rs {
		total += r.Len
	}
	checkRanges(t, data, w.buf, rs)
	// (Served counts a write once it returned, which may be after the
	// client read it: a bound, not an equality.)
	if n != total || progress != total || served.Bytes() > total || len(served.Ranges()) != len(rs) {
		t.Fatalf("fetched %d, progress %d, served %d bytes in %d requests; want %d in %d", n, progress, served.Bytes(), len(served.Ranges()), total, len(rs))
	}
	for _, h := range served.Ranges() {
		var a, b int64
		if _, err := fmt.Sscanf(h, "bytes=%d-%d", &a, &b); err != nil || fmt.Sprintf("bytes=%d-%d", a, b) != h {
			t.Fatalf("Range %q is not one range", h)
		}
	}
	if _, err := oci.FetchRanges(context.Background(), tg, layer, []oci.Range{{Off: 3 << 20, Len: 1}}, w, oci.RangeOptions{}); err == nil {
		t.Fatal("a range past the end was asked for")
	}
}

// Requests run in parallel, never more than Concurrency at once.
func TestFetchRangesConcurrency(t *testing.T) {
	var inflight, most atomic.Int32
	second := make(chan struct{})
	var once sync.Once
	reg := ocitest.NewOlareg(t, func(w http.ResponseWriter, r *http.Request, next http.Handler) bool {
		if !ocitest.Blobs(r) || r.Header.Get("Range") == "" {
			return false
		}
		n := inflight.Add(1)
		defer inflight.Add(-1)
		for {
			m := most.Load()
			if n <= m || most.CompareAndSwap(m, n) {
				break
			}
		}
		if n >= 2 {
			once.Do(func() { close(second) })
		}
		// The first request waits for a second one: only parallel requests
		// get past it.
		select {
		case <-second:
		case <-time.After(10 * time.Second):
			t.Error("no second request came while the first was in flight")
		}
		next.ServeHTTP(w, r)
		return true
	})
	data, tg, layer := rangedBlob(t, reg, 1<<20)
	var rs []oci.Range
	for i := range 16 {
		rs = append(rs, oci.Range{Off: int64(i) * 65536, Len: 65536})
	}
	w := &memWriter{buf: make([]byte, len(data))}
	if _, err := oci.FetchRanges(context.Background(), tg, layer, rs, w, oci.RangeOptions{Concurrency: 3}); err != nil {
		t.Fatal(err)
	}
	checkRanges(t, data, w.buf, rs)
	if m := most.Load(); m < 2 || m > 3 {
		t.Fatalf("%d requests in flight at most, want 2 or 3", m)
	}
}

// A registry that answers a Range request with the whole blob: the caller
// learns it at once (ErrRangeUnsupported), and the blob is not read.
func TestFetchRangesUnsupported(t *testing.T) {
	var on atomic.Bool
	var served ocitest.Served
	reg := ocitest.NewOlareg(t, served.Fault(), switchable(&on, ocitest.IgnoreRange(-1)))
	data, tg, layer := rangedBlob(t, reg, 32<<20)
	on.Store(true)
	served.Reset()
	w := &memWriter{buf: make([]byte, len(data))}
	_, err := oci.FetchRanges(context.Background(), tg, layer, []oci.Range{{Off: 100, Len: 100}}, w, oci.RangeOptions{})
	if !errors.Is(err, oci.ErrRangeUnsupported) {
		t.Fatalf("got %v", err)
	}
	if served.Bytes() > int64(len(data))/2 {
		t.Fatalf("the registry sent %d bytes of the %d-byte blob", served.Bytes(), len(data))
	}
}

// A cut range is asked for again from where it stopped; 429 and 503 are
// retried; beyond the budget the cut is an error.
func TestFetchRangesFaults(t *testing.T) {
	for _, tc := range []struct {
		name  string
		fault ocitest.Fault
		fails bool
	}{
		{"cut twice", ocitest.CutBlob(100<<10, 2), false},
		{"429", ocitest.FailStatus(http.StatusTooManyRequests, 2, ocitest.Blobs), false},
		{"503", ocitest.FailStatus(http.StatusServiceUnavailable, 2, ocitest.Blobs), false},
		{"cut always", ocitest.CutBlob(10<<10, -1), true},
		{"corrupt", ocitest.CorruptRange(1), false}, // FetchRanges writes what comes; the caller checks
	} {
		t.Run(tc.name, func(t *testing.T) {
			var on atomic.Bool
			var served ocitest.Served
			reg := ocitest.NewOlareg(t, served.Fault(), switchable(&on, tc.fault))
			data, tg, layer := rangedBlob(t, reg, 2<<20)
			on.Store(true)
			served.Reset()
			rs := []oci.Range{{Off: 0, Len: 1 << 20}, {Off: 1<<20 + 4096, Len: 512 << 10}}
			w := &memWriter{buf: make([]byte, len(data))}
			_, err := oci.FetchRanges(context.Background(), tg, layer, rs, w, oci.RangeOptions{Concurrency: 1})
			if tc.fails {
				if err == nil {
					t.Fatal("no error")
				}
				t.Log(err)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tc.name == "corrupt" {
				return
			}
			checkRanges(t, data, w.buf, rs)
			// Each cut range is asked for again from where it stopped. (The
			// bytes served are counted once the server's write returns,
			// which may be after the client has read them: only a bound.)
			want := []string{"bytes=0-1048575", "bytes=102400-1048575", "bytes=204800-1048575", "bytes=1052672-1576959"}
			if tc.name == "cut twice" && (!slices.Equal(served.Ranges(), want) || served.Bytes() > 1<<20+512<<10) {
				t.Fatalf("ranges %q, %d bytes served; want ranges %q", served.Ranges(), served.Bytes(), want)
			}
		})
	}
}

// From an OCI layout, ranges are read from the blob file.
func TestFetchRangesLayout(t *testing.T) {
	ctx := context.Background()
	ref := ocitest.NewLayout(t, "1")
	o := ocitest.TestOptions()
	o.CreateLayout = true
	tg, err := oci.Open(ctx, ref, o)
	if err != nil {
		t.Fatal(err)
	}
	data := make([]byte, 1<<20)
	rand.Read(data)
	ocitest.PushRaw(t, tg, "1", data, "application/octet-stream", "", nil, nil)
	d, _ := tg.Resolve(ctx, "1")
	b, _ := oci.FetchManifest(ctx, tg, d)
	var m ocispec.Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	rs := []oci.Range{{Off: 10, Len: 20}, {Off: 500000, Len: 300000}}
	w := &memWriter{buf: make([]byte, len(data))}
	if _, err := oci.FetchRanges(ctx, tg, m.Layers[0], rs, w, oci.RangeOptions{}); err != nil {
		t.Fatal(err)
	}
	checkRanges(t, data, w.buf, rs)
}
