package oci_test

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sysext/sysext/internal/testenv"
	"github.com/sysext/sysext/oci"
	"github.com/sysext/sysext/oci/ocitest"
)

// waits records what a RetryPolicy would have slept, without sleeping.
type waits struct {
	mu sync.Mutex
	d  []time.Duration
}

func (w *waits) sleep(_ context.Context, d time.Duration) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.d = append(w.d, d)
	return nil
}

func (w *waits) all() []time.Duration {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]time.Duration(nil), w.d...)
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		v    string
		want time.Duration
		ok   bool
	}{
		{"0", 0, true},
		{"7", 7 * time.Second, true},
		{" 120 ", 2 * time.Minute, true},
		{"Sun, 01 Mar 2026 12:00:30 GMT", 30 * time.Second, true},
		{"Sunday, 01-Mar-26 12:01:00 GMT", time.Minute, true}, // RFC 850, still a valid HTTP date
		{"Sun, 01 Mar 2026 11:00:00 GMT", 0, true},            // in the past: now
		{"-3", 0, false},
		{"soon", 0, false},
		{"", 0, false},
		{"99999999", 24 * time.Hour, true},
	} {
		got, ok := oci.ParseRetryAfter(c.v, now)
		if got != c.want || ok != c.ok {
			t.Errorf("ParseRetryAfter(%q) = %v, %v; want %v, %v", c.v, got, ok, c.want, c.ok)
		}
	}
}

func TestBackoffIsFullJitter(t *testing.T) {
	base, ceil := 100*time.Millisecond, time.Second
	var asked []int64
	top := &oci.RetryPolicy{Base: base, Cap: ceil, Rand: func(n int64) int64 { asked = append(asked, n); return n - 1 }}
	bottom := &oci.RetryPolicy{Base: base, Cap: ceil, Rand: func(int64) int64 { return 0 }}
	for attempt, limit := range []time.Duration{100, 200, 400, 800, 1000, 1000} {
		limit *= time.Millisecond
		if got := top.Backoff(attempt); got != limit-1 {
			t.Errorf("attempt %d: highest wait %v, want just under %v", attempt, got, limit)
		}
		if got := bottom.Backoff(attempt); got != 0 {
			t.Errorf("attempt %d: lowest wait %v, want 0 (full jitter)", attempt, got)
		}
	}
	// With real randomness the waits spread over the whole range.
	p := &oci.RetryPolicy{Base: base, Cap: ceil}
	lo, hi := time.Hour, time.Duration(0)
	for range 400 {
		d := p.Backoff(3)
		lo, hi = min(lo, d), max(hi, d)
		if d < 0 || d >= 800*time.Millisecond {
			t.Fatalf("wait %v outside [0, 800ms)", d)
		}
	}
	if lo > 200*time.Millisecond || hi < 600*time.Millisecond {
		t.Fatalf("400 waits between %v and %v: not spread over [0, 800ms)", lo, hi)
	}
}

// openWith opens the pushed repository again with policy p.
func openWith(t *testing.T, reg *ocitest.Registry, p *oci.RetryPolicy) oci.Target {
	t.Helper()
	o := ocitest.TestOptions()
	o.Retry = p
	tg, err := oci.Open(context.Background(), reg.Reference(t, "ext/hello:1.0"), o)
	if err != nil {
		t.Fatal(err)
	}
	return tg
}

func TestRetryAfterIsHonoured(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		name   string
		code   int
		header string
		want   time.Duration
	}{
		{"429 seconds", http.StatusTooManyRequests, "3", 3 * time.Second},
		{"503 seconds", http.StatusServiceUnavailable, "2", 2 * time.Second},
		{"429 date", http.StatusTooManyRequests, now.Add(5 * time.Second).Format(http.TimeFormat), 5 * time.Second},
		{"503 date", http.StatusServiceUnavailable, now.Add(4 * time.Second).Format(http.TimeFormat), 4 * time.Second},
	} {
		t.Run(c.name, func(t *testing.T) {
			var n ocitest.Counter
			reg, on := faultyReg(t, ocitest.FailWith(c.code, http.Header{"Retry-After": {c.header}}, 2, ocitest.Manifests, &n))
			pushImage(t, reg, 1024)
			var w waits
			base := 50 * time.Millisecond
			p := &oci.RetryPolicy{Base: base, Sleep: w.sleep, Now: func() time.Time { return now }}
			tg := openWith(t, reg, p)
			*on = true
			if _, err := oci.Resolve(context.Background(), tg, reg.Reference(t, "ext/hello:1.0"), "x86-64"); err != nil {
				t.Fatal(err)
			}
			got := w.all()
			if n.N() != 2 || len(got) != 2 {
				t.Fatalf("%d faults, waits %v; want 2 and 2", n.N(), got)
			}
			// At least what the registry asked, plus jitter under the
			// back-off of that attempt.
			for i, d := range got {
				if d < c.want || d >= c.want+base<<i {
					t.Errorf("wait %d: %v, want in [%v, %v)", i, d, c.want, c.want+base<<i)
				}
			}
		})
	}
}

func TestRetryAfterTooLongIsNotWaitedFor(t *testing.T) {
	var n ocitest.Counter
	reg, on := faultyReg(t, ocitest.FailWith(http.StatusTooManyRequests, http.Header{"Retry-After": {"3600"}}, -1, ocitest.Manifests, &n))
	pushImage(t, reg, 1024)
	var w waits
	tg := openWith(t, reg, &oci.RetryPolicy{MaxRetryAfter: time.Minute, Sleep: w.sleep})
	*on = true
	_, err := oci.Resolve(context.Background(), tg, reg.Reference(t, "ext/hello:1.0"), "x86-64")
	if err == nil || !strings.Contains(err.Error(), "429") {
		t.Fatalf("got %v", err)
	}
	if n.N() != 1 || len(w.all()) != 0 {
		t.Fatalf("%d requests and waits %v: a Retry-After beyond the bound must end the retries at once", n.N(), w.all())
	}
}

func TestRetriesAreBoundedAndBackOff(t *testing.T) {
	var n ocitest.Counter
	reg, on := faultyReg(t, ocitest.FailStatus(http.StatusBadGateway, -1, ocitest.Manifests, &n))
	pushImage(t, reg, 1024)
	var w waits
	base := 10 * time.Millisecond
	tg := openWith(t, reg, &oci.RetryPolicy{MaxRetries: 3, Base: base, Sleep: w.sleep, Rand: func(n int64) int64 { return n - 1 }})
	*on = true
	if _, err := oci.Resolve(context.Background(), tg, reg.Reference(t, "ext/hello:1.0"), "x86-64"); err == nil {
		t.Fatal("resolved through 502s")
	}
	got := w.all()
	want := []time.Duration{base - 1, 2*base - 1, 4*base - 1}
	if n.N() != 4 || len(got) != 3 {
		t.Fatalf("%d requests, waits %v; want 4 and 3", n.N(), got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("wait %d: %v, want %v (ceiling doubling)", i, got[i], want[i])
		}
	}
}

// Two nodes that fail at the same instant do not come back at the same
// instant: each process's randomness gives its own waits.
func TestTwoClientsDoNotRetryInLockStep(t *testing.T) {
	reg, on := faultyReg(t, ocitest.FailWith(http.StatusServiceUnavailable, http.Header{"Retry-After": {"1"}}, -1, ocitest.Manifests))
	pushImage(t, reg, 1024)
	var a, b waits
	ta := openWith(t, reg, &oci.RetryPolicy{MaxRetries: 4, Sleep: a.sleep})
	tb := openWith(t, reg, &oci.RetryPolicy{MaxRetries: 4, Sleep: b.sleep})
	*on = true
	ref := reg.Reference(t, "ext/hello:1.0")
	var wg sync.WaitGroup
	for _, tg := range []oci.Target{ta, tb} {
		wg.Go(func() { _, _ = oci.Resolve(context.Background(), tg, ref, "x86-64") })
	}
	wg.Wait()
	wa, wb := a.all(), b.all()
	if len(wa) != 4 || len(wb) != 4 {
		t.Fatalf("waits %v and %v, want 4 each", wa, wb)
	}
	var at, bt time.Duration // when each retry goes out, from the first failure
	for i := range wa {
		at, bt = at+wa[i], bt+wb[i]
		if at == bt {
			t.Errorf("retry %d of both clients at the same instant (%v)", i, at)
		}
		if wa[i] < time.Second || wb[i] < time.Second {
			t.Errorf("retry %d earlier than Retry-After: %v, %v", i, wa[i], wb[i])
		}
	}
}

// A mirror's policy retries only what the registry asked to be retried:
// its other failures go to the next source at once.
func TestOnlyWhenAskedRetriesRetryAfterOnly(t *testing.T) {
	p := &oci.RetryPolicy{OnlyWhenAsked: true}
	if _, again := p.Delay(0, &http.Response{StatusCode: 500, Header: http.Header{}}, nil); again {
		t.Error("500 without Retry-After retried")
	}
	if d, again := p.Delay(0, &http.Response{StatusCode: 503, Header: http.Header{"Retry-After": {"2"}}}, nil); !again || d < 2*time.Second {
		t.Errorf("503 with Retry-After 2: %v, %v", d, again)
	}
	if _, again := p.Delay(0, &http.Response{StatusCode: 404, Header: http.Header{}}, nil); again {
		t.Error("404 retried")
	}
}

// A cut download is resumed after the policy's back-off, not at once in a
// loop: the resumes wait through the same policy.
func TestResumeWaitsThroughThePolicy(t *testing.T) {
	var cuts ocitest.Counter
	reg, on := faultyReg(t, ocitest.CutBlob(100<<10, 3, &cuts))
	pushImage(t, reg, 512<<10)
	var w waits
	tg := openWith(t, reg, &oci.RetryPolicy{Base: 20 * time.Millisecond, Sleep: w.sleep, Rand: func(n int64) int64 { return n - 1 }})
	r, err := oci.Resolve(context.Background(), tg, reg.Reference(t, "ext/hello:1.0"), "x86-64")
	if err != nil {
		t.Fatal(err)
	}
	*on = true
	d, err := oci.Download(context.Background(), tg, &r.Entry, oci.DownloadOptions{Dir: testenv.TempDirNoLeak(t, ".#")})
	if err != nil {
		t.Fatal(err)
	}
	got := w.all()
	if d.Resumes != 3 || len(got) != 3 || got[0] != 20*time.Millisecond-1 || got[2] != 80*time.Millisecond-1 {
		t.Fatalf("resumes %d, waits %v; want 3 resumes after 20, 40, 80ms back-offs", d.Resumes, got)
	}
}
