package oci_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"testing"

	"oras.land/oras-go/v2/registry/remote/auth"

	"github.com/sysext/sysext/oci"
	"github.com/sysext/sysext/oci/ocitest"
)

// memAt is an io.WriterAt into memory, safe for parallel writes of
// distinct ranges.
type memAt struct{ b []byte }

func (m *memAt) WriteAt(p []byte, off int64) (int, error) {
	if off < 0 || off+int64(len(p)) > int64(len(m.b)) {
		return 0, fmt.Errorf("write %d at %d outside %d", len(p), off, len(m.b))
	}
	return copy(m.b[off:], p), nil
}

// testRanges are ranges of a blob of size bytes: a few small ones, one
// larger than a part (split), the last byte.
func testRanges(size int64) []oci.Range {
	return []oci.Range{{0, 1}, {4096, 100000}, {300 << 10, 9 << 20}, {size - 1, 1}}
}

// checkRanges fails unless got holds want's bytes in rs and zeros elsewhere.
func checkRanges(t *testing.T, got, want []byte, rs []oci.Range) {
	t.Helper()
	exp := make([]byte, len(want))
	for _, r := range rs {
		copy(exp[r.Off:r.Off+r.Len], want[r.Off:r.Off+r.Len])
	}
	if !bytes.Equal(got, exp) {
		t.Fatal("the ranges written differ from the blob's")
	}
}

func pushedBlob(t *testing.T, p pushed) []byte {
	t.Helper()
	b, err := os.ReadFile(p.file)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Against a registry: single-range GETs, never more than Concurrency at
// once, each range at its offset, nothing else written.
func TestFetchRanges(t *testing.T) {
	var served ocitest.Served
	reg := ocitest.NewOlareg(t, served.Fault())
	p := pushImage(t, reg, 12<<20)
	want := pushedBlob(t, p)
	layer := p.r.Entry.Layer
	rs := testRanges(layer.Size)
	served.Reset()
	out := &memAt{b: make([]byte, layer.Size)}
	var progress atomic.Int64
	n, err := oci.FetchRanges(context.Background(), p.tg, layer, rs, out, oci.RangeOptions{Concurrency: 2, Progress: func(n int64) { progress.Add(n) }})
	if err != nil {
		t.Fatal(err)
	}
	var total int64
	for _, r := range rs {
		total += r.Len
	}
	served.Settle()
	if n != total || progress.Load() != total || served.Bytes() != total {
		t.Fatalf("fetched %d, progress %d, served %d; want %d", n, progress.Load(), served.Bytes(), total)
	}
	checkRanges(t, out.b, want, rs)
	// Every request is one range inside one of those asked for, at most
	// 8 MiB (the 9 MiB range is split), at most two at once.
	for _, h := range served.Ranges() {
		var a, b int64
		if _, err := fmt.Sscanf(h, "bytes=%d-%d", &a, &b); err != nil || strings.Contains(h, ",") {
			t.Fatalf("not a single range: %q", h)
		}
		inside := false
		for _, r := range rs {
			inside = inside || a >= r.Off && b < r.Off+r.Len
		}
		if !inside || b-a+1 > 8<<20 {
			t.Errorf("range %q", h)
		}
	}
	if served.Requests() < 5 || served.MaxInFlight() > 2 {
		t.Fatalf("%d requests, %d at once; want at least 5, at most 2 at once: %v", served.Requests(), served.MaxInFlight(), served.Ranges())
	}
}

// From an OCI layout the ranges are read from the blob file.
func TestFetchRangesLayout(t *testing.T) {
	ref := ocitest.NewLayout(t, "1.0")
	o := ocitest.TestOptions()
	o.CreateLayout = true
	ctx := context.Background()
	tg, err := oci.Open(ctx, ref, o)
	if err != nil {
		t.Fatal(err)
	}
	payload := make([]byte, 10<<20)
	for i := range payload {
		payload[i] = byte(i * 7)
	}
	file := ocitest.Squashfs(t, ocitest.Meta("hello", "1.0", "x86-64"), payload)
	if _, err := oci.Push(ctx, tg, ref, []string{file}, oci.PushOptions{}); err != nil {
		t.Fatal(err)
	}
	r, err := oci.Resolve(ctx, tg, ref, "x86-64")
	if err != nil {
		t.Fatal(err)
	}
	want, _ := os.ReadFile(file)
	rs := testRanges(r.Entry.Layer.Size)
	out := &memAt{b: make([]byte, r.Entry.Layer.Size)}
	if _, err := oci.FetchRanges(ctx, tg, r.Entry.Layer, rs, out, oci.RangeOptions{}); err != nil {
		t.Fatal(err)
	}
	checkRanges(t, out.b, want, rs)
}

// A server that answers a Range with the whole blob: ErrRangeUnsupported
// at the first answer, and the rest is not asked for.
func TestFetchRangesServerIgnoresRange(t *testing.T) {
	reg, on := faultyReg(t, ocitest.IgnoreRange(-1))
	p := pushImage(t, reg, 4<<20)
	*on = true
	out := &memAt{b: make([]byte, p.r.Entry.Layer.Size)}
	_, err := oci.FetchRanges(context.Background(), p.tg, p.r.Entry.Layer, testRanges(p.r.Entry.Layer.Size)[:2], out, oci.RangeOptions{Concurrency: 1})
	if !errors.Is(err, oci.ErrRangeUnsupported) {
		t.Fatalf("got %v, want ErrRangeUnsupported", err)
	}
	t.Log(err)
}

// A cut answer is asked again from where it stopped, within its range; a
// cut that never stops gives up after MaxRetries.
func TestFetchRangesResumesCuts(t *testing.T) {
	var cuts ocitest.Counter
	var served ocitest.Served
	count, cut := served.Fault(), ocitest.CutBlob(50<<10, 2, &cuts)
	reg, on := faultyReg(t, func(w http.ResponseWriter, r *http.Request, next http.Handler) bool {
		return count(w, r, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if !cut(w, r, next) {
				next.ServeHTTP(w, r)
			}
		}))
	})
	p := pushImage(t, reg, 2<<20)
	want := pushedBlob(t, p)
	*on = true
	layer := p.r.Entry.Layer
	rs := []oci.Range{{1000, 500 << 10}}
	out := &memAt{b: make([]byte, layer.Size)}
	if _, err := oci.FetchRanges(context.Background(), p.tg, layer, rs, out, oci.RangeOptions{Concurrency: 1, RetryWait: 1}); err != nil {
		t.Fatal(err)
	}
	checkRanges(t, out.b, want, rs)
	got := served.Ranges()
	end := 1000 + 500<<10 - 1
	wantRanges := []string{fmt.Sprintf("bytes=1000-%d", end), fmt.Sprintf("bytes=%d-%d", 1000+50<<10, end), fmt.Sprintf("bytes=%d-%d", 1000+100<<10, end)}
	if cuts.N() != 2 || fmt.Sprint(got) != fmt.Sprint(wantRanges) {
		t.Fatalf("cuts %d, ranges %v; want 2, %v", cuts.N(), got, wantRanges)
	}
}

func TestFetchRangesGivesUpOnCuts(t *testing.T) {
	var cuts ocitest.Counter
	reg, on := faultyReg(t, ocitest.CutBlob(10<<10, -1, &cuts))
	p := pushImage(t, reg, 1<<20)
	*on = true
	out := &memAt{b: make([]byte, p.r.Entry.Layer.Size)}
	_, err := oci.FetchRanges(context.Background(), p.tg, p.r.Entry.Layer, []oci.Range{{0, 500 << 10}}, out, oci.RangeOptions{Concurrency: 1, MaxRetries: 3, RetryWait: 1})
	if err == nil || !strings.Contains(err.Error(), "after 3 retries") || cuts.N() != 4 {
		t.Fatalf("got %v after %d cuts; want a failure after 3 retries (4 cuts)", err, cuts.N())
	}
	t.Log(err)
}

// 429 and 5xx answers to range requests are retried (by the transport,
// with back-off), a bounded number of times.
func TestFetchRangesRetriesStatus(t *testing.T) {
	for _, code := range []int{429, 500, 503} {
		var n ocitest.Counter
		reg, on := faultyReg(t, ocitest.FailStatus(code, 2, ocitest.Blobs, &n))
		p := pushImage(t, reg, 1<<20)
		want := pushedBlob(t, p)
		*on = true
		rs := []oci.Range{{0, 100}, {200 << 10, 300 << 10}}
		out := &memAt{b: make([]byte, p.r.Entry.Layer.Size)}
		if _, err := oci.FetchRanges(context.Background(), p.tg, p.r.Entry.Layer, rs, out, oci.RangeOptions{Concurrency: 1}); err != nil {
			t.Fatalf("%d twice, then fine: %v", code, err)
		}
		checkRanges(t, out.b, want, rs)
		if n.N() != 2 {
			t.Fatalf("%d: fault fired %d times", code, n.N())
		}
		reg, on = faultyReg(t, ocitest.FailStatus(code, -1, ocitest.Blobs, &n))
		p = pushImage(t, reg, 1<<20)
		*on = true
		n = ocitest.Counter{}
		_, err := oci.FetchRanges(context.Background(), p.tg, p.r.Entry.Layer, rs, out, oci.RangeOptions{Concurrency: 1})
		if err == nil || !strings.Contains(err.Error(), fmt.Sprint(code)) {
			t.Fatalf("%d forever: got %v", code, err)
		}
	}
}

// A registry that redirects blob GETs (object storage, a CDN): the first
// range follows the redirect, the next go straight to its target, never
// with the registry's credentials; when the target refuses (403, an
// expired signature) the range goes back to the registry.
func TestFetchRangesRedirect(t *testing.T) {
	var redirects, cdnRequests, withAuth, refused atomic.Int64
	var regURL string
	cdn := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := cdnRequests.Add(1)
		if r.Header.Get("Authorization") != "" {
			withAuth.Add(1)
		}
		if r.URL.Query().Get("sig") != "ok" {
			w.WriteHeader(http.StatusForbidden)
			return
		}
		if n == 2 {
			refused.Add(1)
			w.WriteHeader(http.StatusForbidden) // the signature expired
			return
		}
		req, _ := http.NewRequest(http.MethodGet, regURL+r.URL.Path, nil)
		req.Header.Set("Range", r.Header.Get("Range"))
		req.Header.Set("X-From-CDN", "1")
		req.SetBasicAuth("user", "pass")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			w.WriteHeader(http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		for k, v := range resp.Header {
			w.Header()[k] = v
		}
		w.WriteHeader(resp.StatusCode)
		io.Copy(w, resp.Body)
	}))
	t.Cleanup(cdn.Close)
	on := new(bool)
	reg := ocitest.NewOlareg(t, basicAuth, func(w http.ResponseWriter, r *http.Request, next http.Handler) bool {
		if !*on || !ocitest.Blobs(r) || r.Header.Get("X-From-CDN") != "" {
			return false
		}
		redirects.Add(1)
		http.Redirect(w, r, cdn.URL+r.URL.Path+"?sig=ok", http.StatusTemporaryRedirect)
		return true
	})
	regURL = reg.URL
	ref := reg.Reference(t, "ext/hello:1.0")
	o := ocitest.TestOptions()
	o.Credentials = func(context.Context, string) (auth.Credential, error) {
		return auth.Credential{Username: "user", Password: "pass"}, nil
	}
	ctx := context.Background()
	tg, err := oci.Open(ctx, ref, o)
	if err != nil {
		t.Fatal(err)
	}
	file := ocitest.Squashfs(t, ocitest.Meta("hello", "1.0", "x86-64"), bytes.Repeat([]byte("sysext"), 300000))
	if _, err := oci.Push(ctx, tg, ref, []string{file}, oci.PushOptions{}); err != nil {
		t.Fatal(err)
	}
	r, err := oci.Resolve(ctx, tg, ref, "x86-64")
	if err != nil {
		t.Fatal(err)
	}
	want, _ := os.ReadFile(file)
	*on = true
	rs := []oci.Range{{0, 1000}, {5000, 1000}, {20000, 1000}, {40000, 1000}}
	out := &memAt{b: make([]byte, r.Entry.Layer.Size)}
	if _, err := oci.FetchRanges(ctx, tg, r.Entry.Layer, rs, out, oci.RangeOptions{Concurrency: 1}); err != nil {
		t.Fatal(err)
	}
	checkRanges(t, out.b, want, rs)
	// Range 1 via the registry; range 2 refused by the CDN, then via the
	// registry again; ranges 3 and 4 straight to the CDN.
	if redirects.Load() != 2 || cdnRequests.Load() != 5 || refused.Load() != 1 || withAuth.Load() != 0 {
		t.Fatalf("redirects %d, CDN requests %d (refused %d, with credentials %d); want 2, 5, 1, 0", redirects.Load(), cdnRequests.Load(), refused.Load(), withAuth.Load())
	}
}

// A layout without the blob, a range outside the blob: clear errors.
func TestFetchRangesBadInput(t *testing.T) {
	reg := ocitest.NewOlareg(t)
	p := pushImage(t, reg, 4<<10)
	out := &memAt{b: make([]byte, p.r.Entry.Layer.Size)}
	_, err := oci.FetchRanges(context.Background(), p.tg, p.r.Entry.Layer, []oci.Range{{p.r.Entry.Layer.Size - 10, 11}}, out, oci.RangeOptions{})
	if err == nil || !strings.Contains(err.Error(), "outside") {
		t.Fatalf("got %v", err)
	}
	ref := ocitest.NewLayout(t, "1")
	o := ocitest.TestOptions()
	o.CreateLayout = true
	tg, err := oci.Open(context.Background(), ref, o)
	if err != nil {
		t.Fatal(err)
	}
	_, err = oci.FetchRanges(context.Background(), tg, p.r.Entry.Layer, []oci.Range{{0, 10}}, out, oci.RangeOptions{})
	if !errors.Is(err, oci.ErrNotFound) {
		t.Fatalf("got %v, want ErrNotFound", err)
	}
}

// FetchHead reads a blob's first bytes with one Range request; a blob
// smaller than asked is read whole; a registry that ignores Range gets
// ErrRangeUnsupported; a head cut short is an error, never short bytes.
func TestFetchHead(t *testing.T) {
	ctx := context.Background()
	var served ocitest.Served
	var mode atomic.Int32 // 1: ignore Range, 2: cut the answer
	ignore, cut := ocitest.IgnoreRange(-1), ocitest.CutBlob(1000, -1)
	count := served.Fault()
	reg := ocitest.NewOlareg(t, func(w http.ResponseWriter, r *http.Request, next http.Handler) bool {
		return count(w, r, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			switch {
			case mode.Load() == 1 && ignore(w, r, next):
			case mode.Load() == 2 && cut(w, r, next):
			default:
				next.ServeHTTP(w, r)
			}
		}))
	})
	p := pushImage(t, reg, 1<<20)
	want := pushedBlob(t, p)
	layer := p.r.Entry.Layer
	served.Reset()
	head, err := oci.FetchHead(ctx, p.tg, layer, 4096)
	served.Settle()
	if err != nil || !bytes.Equal(head, want[:4096]) {
		t.Fatalf("FetchHead = %d bytes, %v", len(head), err)
	}
	if rg := served.Ranges(); served.Bytes() != 4096 || len(rg) != 1 || rg[0] != "bytes=0-4095" {
		t.Fatalf("the registry sent %d bytes for %q", served.Bytes(), rg)
	}
	if head, err := oci.FetchHead(ctx, p.tg, layer, layer.Size+100); err != nil || !bytes.Equal(head, want) {
		t.Fatalf("FetchHead of more than the blob = %d bytes, %v", len(head), err)
	}
	mode.Store(1)
	if _, err := oci.FetchHead(ctx, p.tg, layer, 4096); !errors.Is(err, oci.ErrRangeUnsupported) {
		t.Fatalf("a registry that ignores Range: %v", err)
	}
	mode.Store(2)
	if head, err := oci.FetchHead(ctx, p.tg, layer, 4096); err == nil {
		t.Fatalf("a cut answer gave %d bytes and no error", len(head))
	}
}
