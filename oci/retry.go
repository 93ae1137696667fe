package oci

import (
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"time"

	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/registry/remote"
	"oras.land/oras-go/v2/registry/remote/auth"
)

// Defaults of RetryPolicy.
const (
	DefaultMaxRetries = 4
	DefaultRetryBase  = 250 * time.Millisecond
	DefaultRetryCap   = 10 * time.Second
	// DefaultMaxRetryAfter is the longest Retry-After a request waits for;
	// a registry that asks for more gets its answer back at once (a timer
	// run tries again at its next slot, not by holding a connection open).
	DefaultMaxRetryAfter = 60 * time.Second
)

// RetryPolicy decides whether a registry request is asked again and how
// long to wait first. It is the one home of oci's retrying: the transport
// under every registry client (Open, Login), the resumes of a cut
// download, and any other reader that asks a registry again (a range
// engine) wait through it.
//
// Waits use full jitter: before retry n (from 0) the wait is uniform in
// [0, min(Cap, Base·2ⁿ)), so a fleet whose requests failed at the same
// instant does not come back at the same instant. A 429 or 503 answer with
// Retry-After (seconds or an HTTP date) waits at least that long, plus the
// same jitter on top; one asking for more than MaxRetryAfter is not
// retried. The zero value is ready to use.
type RetryPolicy struct {
	// MaxRetries bounds the retries after the first try (0 means
	// DefaultMaxRetries; negative means none).
	MaxRetries int
	// Base is the ceiling of the first back-off (default
	// DefaultRetryBase), doubled on each retry up to Cap (default
	// DefaultRetryCap).
	Base, Cap time.Duration
	// MaxRetryAfter is the longest Retry-After honoured (default
	// DefaultMaxRetryAfter).
	MaxRetryAfter time.Duration
	// OnlyWhenAsked retries only answers that carry Retry-After: for a
	// mirror, whose other failures go to the next source at once.
	OnlyWhenAsked bool
	// Rand returns a uniform value in [0, n), n > 0 (tests). nil means
	// math/rand/v2, seeded per process: two nodes never share a sequence.
	Rand func(n int64) int64
	// Sleep waits d or until ctx is done (tests record the waits). nil
	// means a timer.
	Sleep func(ctx context.Context, d time.Duration) error
	// Now is the clock for Retry-After dates (nil: time.Now).
	Now func() time.Time
}

// Retries is how many retries the policy allows after the first try.
func (p *RetryPolicy) Retries() int {
	switch {
	case p == nil || p.MaxRetries == 0:
		return DefaultMaxRetries
	case p.MaxRetries < 0:
		return 0
	}
	return p.MaxRetries
}

// Backoff is the wait before retry attempt (from 0) when the server named
// none: uniform in [0, min(Cap, Base·2^attempt)).
func (p *RetryPolicy) Backoff(attempt int) time.Duration {
	base, ceil := DefaultRetryBase, DefaultRetryCap
	if p != nil && p.Base > 0 {
		base = p.Base
	}
	if p != nil && p.Cap > 0 {
		ceil = p.Cap
	}
	ceil = max(ceil, base)
	limit := base
	for i := 0; i < attempt && limit < ceil; i++ {
		limit *= 2
	}
	limit = min(limit, ceil)
	r := rand.Int64N
	if p != nil && p.Rand != nil {
		r = p.Rand
	}
	return time.Duration(r(int64(limit)))
}

// Delay says whether to retry after the answer resp (or the error err) of
// try attempt (from 0), and how long to wait first.
func (p *RetryPolicy) Delay(attempt int, resp *http.Response, err error) (time.Duration, bool) {
	if attempt >= p.Retries() || !Retryable(resp, err) {
		return 0, false
	}
	if ra, ok := p.retryAfter(resp); ok {
		maxRA := DefaultMaxRetryAfter
		if p != nil && p.MaxRetryAfter > 0 {
			maxRA = p.MaxRetryAfter
		}
		if ra > maxRA {
			return 0, false
		}
		return ra + p.Backoff(attempt), true
	}
	if p != nil && p.OnlyWhenAsked {
		return 0, false
	}
	return p.Backoff(attempt), true
}

// Wait sleeps d (through Sleep), or until ctx is done.
func (p *RetryPolicy) Wait(ctx context.Context, d time.Duration) error {
	if p != nil && p.Sleep != nil {
		return p.Sleep(ctx, d)
	}
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// retryAfter reads Retry-After from a 429 or 503 answer.
func (p *RetryPolicy) retryAfter(resp *http.Response) (time.Duration, bool) {
	if resp == nil || (resp.StatusCode != http.StatusTooManyRequests && resp.StatusCode != http.StatusServiceUnavailable) {
		return 0, false
	}
	now := time.Now
	if p != nil && p.Now != nil {
		now = p.Now
	}
	return ParseRetryAfter(resp.Header.Get("Retry-After"), now())
}

// ParseRetryAfter reads a Retry-After value (RFC 9110 10.2.3): delay
// seconds, or an HTTP date (a date in the past means now).
func ParseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		if n < 0 {
			return 0, false
		}
		// Anything beyond a day is as good as "much later".
		return time.Duration(min(n, 86400)) * time.Second, true
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0, false
	}
	return max(t.Sub(now), 0), true
}

// Retryable reports whether a request that got resp (or err) may succeed
// when asked again: 408, 429, 500, 502, 503, 504; a timeout; a connection
// reset or cut short. A refused connection is not retried: nothing is
// listening (a mirror's next source is asked instead).
func Retryable(resp *http.Response, err error) bool {
	if err != nil {
		if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			return false
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return true
		}
		return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF)
	}
	switch resp.StatusCode {
	case http.StatusRequestTimeout, http.StatusTooManyRequests, http.StatusInternalServerError,
		http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return true
	}
	return false
}

// Transport returns base with p's retries layered on top. A request with
// a body is retried only when the body can be read again (GetBody).
func (p *RetryPolicy) Transport(base http.RoundTripper) http.RoundTripper {
	if base == nil {
		base = http.DefaultTransport
	}
	return &retryTransport{base: base, policy: p}
}

type retryTransport struct {
	base   http.RoundTripper
	policy *RetryPolicy
}

func (t *retryTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	for attempt := 0; ; attempt++ {
		resp, err := t.base.RoundTrip(req)
		d, again := t.policy.Delay(attempt, resp, err)
		if !again || (req.Body != nil && req.Body != http.NoBody && req.GetBody == nil) {
			return resp, err
		}
		if req.GetBody != nil {
			body, berr := req.GetBody()
			if berr != nil {
				return resp, err
			}
			req.Body = body
		}
		if resp != nil {
			// Drain a little so the connection can be reused.
			_, _ = io.CopyN(io.Discard, resp.Body, 4<<10)
			resp.Body.Close()
		}
		if werr := t.policy.Wait(ctx, d); werr != nil {
			return nil, werr
		}
	}
}

// RetryPolicyOf returns the policy t's requests are retried with (the
// default policy for a target oci did not open), for readers that ask the
// registry again themselves (resumes, ranges).
func RetryPolicyOf(t content.Fetcher) *RetryPolicy {
	switch t := t.(type) {
	case *remote.Repository:
		if c, ok := t.Client.(*auth.Client); ok && c.Client != nil {
			if rt, ok := c.Client.Transport.(*retryTransport); ok {
				return rt.policy
			}
		}
	case *mirrorTarget:
		return t.policy
	}
	return &RetryPolicy{}
}
