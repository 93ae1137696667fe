package oci

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/registry/remote"
	"oras.land/oras-go/v2/registry/remote/auth"
)

// Range is Len bytes of a blob from Off on.
type Range struct{ Off, Len int64 }

// ErrRangeUnsupported says the store answered a Range request with the
// whole blob (200 instead of 206), or cannot read at an offset at all: the
// caller falls back to a full download.
var ErrRangeUnsupported = errors.New("the registry does not serve byte ranges")

// RangeOptions tune FetchRanges.
type RangeOptions struct {
	// Concurrency bounds the requests in flight (default 4).
	Concurrency int
	// Progress, when set, is told how many bytes each write added. Calls
	// are serialised (never two at once), from the fetching goroutines.
	Progress func(n int64)
	// MaxRetries bounds, per range, how often a cut answer or a failed
	// request is asked again from where it stopped (default 5; negative:
	// never). Answers 429 and 5xx are retried below this, by the client's
	// transport (Options.MaxRetries), with its back-off.
	MaxRetries int
	// RetryWait is the first back-off after a cut, doubled each time
	// (default 250ms, capped at 10s).
	RetryWait time.Duration
	// InOrder fetches each range with one request (resumed where a cut
	// stopped it), never split across connections: w sees a range's bytes
	// in order, as a delta download's chunk checks need.
	InOrder bool
}

// The engine's own sizes: a buffer per read (small: up to two per
// connection are in use, and the links that need several connections are
// slow; peak RSS stays under 64 MiB with eight), the smallest part, and
// the largest part one request fetches when several run at once (the
// research measured 8 MiB pieces as cheap in round trips on a 20 ms link).
const (
	rangeBufSize = 256 << 10
	minPartSize  = 1 << 20
	maxPartSize  = 8 << 20
)

// FetchRanges fetches the given ranges of layer from t and writes each at
// its offset in w: single-range GETs against a registry (object stores
// refuse several ranges in one request), at most opts.Concurrency at once,
// ranges larger than 8 MiB split; reads at the offsets of the blob file in
// an OCI layout. w.WriteAt is called from several goroutines at once, with
// ranges that never overlap (io.WriterAt's contract). A cut answer is asked
// again from where it stopped, within its range, with back-off. A blob
// redirect (registries on object storage, CDNs) is followed once; later
// ranges go straight to its target, without the registry's credentials,
// and back to the registry when the target refuses (401/403: an expired
// signature). A registry that answers a range with the whole blob stops
// the fetch with ErrRangeUnsupported. It returns how many bytes were
// written; on error some ranges may be written, and nothing is verified:
// the caller checks the assembled blob's digest.
func FetchRanges(ctx context.Context, t Target, layer ocispec.Descriptor, ranges []Range, w io.WriterAt, opts RangeOptions) (int64, error) {
	for _, r := range ranges {
		if r.Off < 0 || r.Len < 0 || r.Off > layer.Size-r.Len {
			return 0, fmt.Errorf("layer %s: range %d+%d is outside its %d bytes", layer.Digest, r.Off, r.Len, layer.Size)
		}
	}
	n, _, _, err := fetchRanges(ctx, t, layer, ranges, w, opts)
	return n, err
}

// fetchRanges is FetchRanges, which also returns the bytes received and
// not written (a mirror's whole answer, read past: mirrorTarget.ranges)
// and, through mirrors, the sources that wrote bytes.
func fetchRanges(ctx context.Context, t Target, layer ocispec.Descriptor, ranges []Range, w io.WriterAt, opts RangeOptions) (written, skipped int64, used []*source, err error) {
	if m, ok := t.(*mirrorTarget); ok {
		return m.ranges(ctx, layer, ranges, w, opts)
	}
	src, err := openRangeSource(t, layer)
	if err != nil {
		return 0, 0, nil, err
	}
	defer src.Close()
	e := newRangeEngine(src, layer, w, opts)
	e.queue = append(e.queue, ranges...)
	e.limit = e.conc
	written, err = e.run(ctx)
	return written, 0, nil, err
}

// rangeSource opens a part of one blob.
type rangeSource interface {
	// open returns a reader of exactly the n bytes at off (fewer only
	// when cut).
	open(ctx context.Context, off, n int64) (io.ReadCloser, error)
	Close() error
}

// openRangeSource picks how t serves ranges of layer.
func openRangeSource(t content.Fetcher, layer ocispec.Descriptor) (rangeSource, error) {
	switch t := t.(type) {
	case *remote.Repository:
		return newRegistrySource(t, layer), nil
	case *layoutTarget:
		return openLayoutSource(t, layer)
	}
	return nil, fmt.Errorf("layer %s: %T: %w", layer.Digest, t, ErrRangeUnsupported)
}

// registrySource asks a registry for ranges of one blob, one GET each.
type registrySource struct {
	// whole: an answer with the whole blob (200) to a Range request is
	// handed over as a *wholeAnswer rather than refused (a mirror's).
	whole  bool
	repo   *remote.Repository
	layer  ocispec.Descriptor
	url    string     // the registry's blob URL
	direct client     // for a redirect's target: no registry credentials
	via    client     // the registry's client (auth)
	mu     sync.Mutex // guards target
	target string     // where the registry redirected, "" when it did not
	scope  func(context.Context) context.Context
}

type client interface {
	Do(*http.Request) (*http.Response, error)
}

func newRegistrySource(repo *remote.Repository, layer ocispec.Descriptor) *registrySource {
	ref := repo.Reference
	ref.Reference = layer.Digest.String()
	scheme := "https"
	if repo.PlainHTTP {
		scheme = "http"
	}
	var via client = repo.Client
	if repo.Client == nil {
		via = auth.DefaultClient
	}
	// The redirect target gets the plain HTTP client under the registry's
	// auth (its retries included), never the credentials.
	direct := client(http.DefaultClient)
	if ac, ok := via.(*auth.Client); ok && ac.Client != nil {
		direct = ac.Client
	}
	return &registrySource{
		repo:   repo,
		layer:  layer,
		url:    fmt.Sprintf("%s://%s/v2/%s/blobs/%s", scheme, ref.Host(), ref.Repository, ref.Reference),
		via:    via,
		direct: direct,
		scope: func(ctx context.Context) context.Context {
			return auth.AppendRepositoryScope(ctx, ref, auth.ActionPull)
		},
	}
}

func (s *registrySource) Close() error { return nil }

func (s *registrySource) open(ctx context.Context, off, n int64) (io.ReadCloser, error) {
	s.mu.Lock()
	target := s.target
	s.mu.Unlock()
	if target != "" {
		resp, err := s.get(ctx, s.direct, target, off, n)
		if err == nil && (resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden) {
			// The target no longer takes us (a signed URL expired): ask
			// the registry again, which redirects anew.
			resp.Body.Close()
			s.mu.Lock()
			if s.target == target {
				s.target = ""
			}
			s.mu.Unlock()
		} else {
			return s.check(ctx, resp, err, target, off, n)
		}
	}
	resp, err := s.get(s.scope(ctx), s.via, s.url, off, n)
	if err == nil && resp.Request != nil && resp.Request.URL.String() != s.url && resp.StatusCode == http.StatusPartialContent {
		s.mu.Lock()
		s.target = resp.Request.URL.String()
		s.mu.Unlock()
	}
	return s.check(ctx, resp, err, s.url, off, n)
}

func (s *registrySource) get(ctx context.Context, c client, url string, off, n int64) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Range", fmt.Sprintf("bytes=%d-%d", off, off+n-1))
	return c.Do(req)
}

// check turns an answer into the body of the range asked for, or an error:
// a retryable one (errCut) for a failed request, a final one otherwise.
func (s *registrySource) check(ctx context.Context, resp *http.Response, err error, url string, off, n int64) (io.ReadCloser, error) {
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, cutError{fmt.Errorf("GET %s bytes %d-%d: %w", redact(url), off, off+n-1, err)}
	}
	d := s.layer.Digest
	switch resp.StatusCode {
	case http.StatusPartialContent:
		first, last, size, ok := parseContentRange(resp.Header.Get("Content-Range"))
		if !ok || first != off || last != off+n-1 || size != s.layer.Size && size != -1 {
			resp.Body.Close()
			return nil, fmt.Errorf("layer %s: asked for bytes %d-%d of %d, the registry answered %q", d, off, off+n-1, s.layer.Size, resp.Header.Get("Content-Range"))
		}
		if cl := resp.ContentLength; cl != -1 && cl != n {
			resp.Body.Close()
			return nil, sizeMismatch(s.layer)
		}
		return resp.Body, nil
	case http.StatusOK:
		if off == 0 && n == s.layer.Size && (resp.ContentLength == -1 || resp.ContentLength == n) {
			return resp.Body, nil // the whole blob was what we asked for
		}
		if s.whole && (resp.ContentLength == -1 || resp.ContentLength == s.layer.Size) {
			return nil, &wholeAnswer{body: resp.Body, url: redact(url)}
		}
		resp.Body.Close()
		return nil, fmt.Errorf("layer %s: GET %s with a Range answered 200 with the whole blob: %w", d, redact(url), ErrRangeUnsupported)
	case http.StatusNotFound:
		resp.Body.Close()
		return nil, fmt.Errorf("%s: %w", d, ErrNotFound)
	default:
		resp.Body.Close()
		return nil, fmt.Errorf("layer %s: GET %s bytes %d-%d: %s", d, redact(url), off, off+n-1, resp.Status)
	}
}

// redact drops a URL's query (a redirect target's signature).
func redact(url string) string {
	if i := strings.IndexByte(url, '?'); i >= 0 {
		return url[:i] + "?…"
	}
	return url
}

// parseContentRange reads "bytes FIRST-LAST/SIZE" (SIZE may be "*": -1).
func parseContentRange(v string) (first, last, size int64, ok bool) {
	rest, found := strings.CutPrefix(v, "bytes ")
	if !found {
		return 0, 0, 0, false
	}
	span, total, found := strings.Cut(rest, "/")
	if !found {
		return 0, 0, 0, false
	}
	a, b, found := strings.Cut(span, "-")
	if !found {
		return 0, 0, 0, false
	}
	var err1, err2, err3 error
	first, err1 = strconv.ParseInt(a, 10, 64)
	last, err2 = strconv.ParseInt(b, 10, 64)
	size = -1
	if total != "*" {
		size, err3 = strconv.ParseInt(total, 10, 64)
	}
	return first, last, size, err1 == nil && err2 == nil && err3 == nil && first <= last
}

// layoutSource reads ranges of a blob file in an OCI layout.
type layoutSource struct{ f *os.File }

func openLayoutSource(t *layoutTarget, layer ocispec.Descriptor) (*layoutSource, error) {
	if err := layer.Digest.Validate(); err != nil {
		return nil, fmt.Errorf("layer digest %q: %w", layer.Digest, err)
	}
	path := filepath.Join(t.root, ocispec.ImageBlobsDir, layer.Digest.Algorithm().String(), layer.Digest.Encoded())
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%s: %w", layer.Digest, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("layer %s: %w", layer.Digest, err)
	}
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() || fi.Size() != layer.Size {
		f.Close()
		return nil, sizeMismatch(layer)
	}
	return &layoutSource{f: f}, nil
}

func (s *layoutSource) open(_ context.Context, off, n int64) (io.ReadCloser, error) {
	return io.NopCloser(io.NewSectionReader(s.f, off, n)), nil
}

func (s *layoutSource) Close() error { return s.f.Close() }

// wholeAnswer is a source's answer to a Range request with the whole
// blob: a pull-through cache that does not hold it yet fetches it from
// its upstream and streams all of it (the distribution registry's proxy
// mode does), as does a mirror that ignores Range. Read to its end, the
// cache keeps its copy; closed early, it drops it and the next node's
// request costs the upstream another copy.
type wholeAnswer struct {
	body io.ReadCloser
	url  string
}

func (w *wholeAnswer) Error() string {
	return fmt.Sprintf("GET %s with a Range answered 200 with the whole blob: %v", w.url, ErrRangeUnsupported)
}

func (w *wholeAnswer) Unwrap() error { return ErrRangeUnsupported }

// sinkError is a failed write into the engine's io.WriterAt: not the
// source's fault (a chunk that does not match is the source's bytes,
// ErrChunkMismatch, and is told apart by that).
type sinkError struct{ error }

func (e sinkError) Unwrap() error { return e.error }

// cutError is a failure worth asking again: the request failed or its
// answer was cut.
type cutError struct{ error }

func (e cutError) Unwrap() error { return e.error }

// backoff is how long to wait before the attempt-th retry (1-based): first,
// doubled each time, at most 10 s. The one back-off rule of this package's
// own retries; the transport's (429/5xx, Retry-After) is in newAuthClient.
func backoff(attempt int, first time.Duration) time.Duration {
	d := first
	for i := 1; i < attempt && d < 10*time.Second; i++ {
		d *= 2
	}
	return min(d, 10*time.Second)
}

// rangeEngine fetches queued ranges with a few workers. limit, which the
// full download's ramp raises and lowers, says how many may be fetching.
type rangeEngine struct {
	src      rangeSource
	layer    ocispec.Descriptor
	w        io.WriterAt
	conc     int
	retries  int
	wait     time.Duration
	progress func(n int64)
	progMu   sync.Mutex

	free chan []byte
	// onChunk, when set, takes each written buffer (n bytes at off) and
	// gives it back to free when done with it.
	onChunk func(buf []byte, n int, off int64)

	mu     sync.Mutex
	cond   *sync.Cond
	queue  []Range // not claimed yet, in offset order
	limit  int     // workers allowed to fetch
	active int     // workers fetching
	part   int64   // the part size while several fetch (0: maxPartSize)
	whole  bool    // never split a range (RangeOptions.InOrder)
	err    error   // the first failure
	// probe: one request until the source answers one with the range
	// (206); a whole answer (wholeAnswer) to that first request then
	// serves every range queued, read once (takeWhole). A cold
	// pull-through cache answers each request it gets at once with a
	// whole copy fetched from its upstream: one at a time, it fetches one.
	probe bool
	// opened is the limit once the probe is answered (0: conc).
	opened int
	// left are the parts of ranges a failed fetch did not write: with
	// queue, what the next source is asked for (remaining).
	left []Range
	// wholeFrom is set to the source's URL when a whole answer served
	// the ranges.
	wholeFrom string

	received atomic.Int64 // bytes written
	skipped  atomic.Int64 // bytes of a whole answer read past
}

func newRangeEngine(src rangeSource, layer ocispec.Descriptor, w io.WriterAt, opts RangeOptions) *rangeEngine {
	conc := opts.Concurrency
	if conc <= 0 {
		conc = 4
	}
	retries := opts.MaxRetries
	if retries == 0 {
		retries = 5
	}
	wait := opts.RetryWait
	if wait <= 0 {
		wait = 250 * time.Millisecond
	}
	e := &rangeEngine{src: src, layer: layer, w: w, conc: conc, retries: retries, wait: wait, progress: opts.Progress, whole: opts.InOrder}
	e.cond = sync.NewCond(&e.mu)
	return e
}

// setLimit lets n workers fetch (at most conc).
func (e *rangeEngine) setLimit(n int) {
	e.mu.Lock()
	n = max(1, min(n, e.conc))
	if e.probe {
		e.opened = n // for when the probe is answered: one until then
	} else {
		e.limit = n
	}
	e.mu.Unlock()
	e.cond.Broadcast()
}

// claim takes the next part to fetch: false when there is none left or
// the fetch failed. With one worker allowed, it takes a whole range (one
// request, as a single stream would); with several, at most the part size.
func (e *rangeEngine) claim(ctx context.Context) (Range, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for {
		if e.err != nil || len(e.queue) == 0 || ctx.Err() != nil {
			return Range{}, false
		}
		if e.active < e.limit {
			break
		}
		e.cond.Wait()
	}
	r := e.queue[0]
	// A probe asks one part when several connections are to follow it.
	if (e.limit > 1 || e.probe && e.opened > 1) && !e.whole {
		part := e.part
		if part <= 0 {
			part = maxPartSize
		}
		// Near the end, smaller parts, so that the connections finish
		// together rather than one after the others.
		var queued int64
		for _, q := range e.queue {
			queued += q.Len
		}
		part = min(part, max(minPartSize, queued/int64(e.limit)))
		if r.Len > part {
			e.queue[0] = Range{r.Off + part, r.Len - part}
			r.Len = part
		} else {
			e.queue = e.queue[1:]
		}
	} else {
		e.queue = e.queue[1:]
	}
	e.active++
	return r, true
}

func (e *rangeEngine) done(err error) {
	e.mu.Lock()
	e.active--
	if err != nil && e.err == nil {
		e.err = err
	}
	e.mu.Unlock()
	e.cond.Broadcast()
}

// run fetches everything queued and returns how many bytes were written.
func (e *rangeEngine) run(ctx context.Context) (int64, error) {
	if e.free == nil {
		e.free = make(chan []byte, e.conc)
		for i := 0; i < e.conc; i++ {
			e.free <- make([]byte, rangeBufSize)
		}
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// Wake claimers waiting for a slot when the context ends.
	stop := context.AfterFunc(ctx, e.cond.Broadcast)
	defer stop()
	var wg sync.WaitGroup
	for i := 0; i < e.conc; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				r, ok := e.claim(ctx)
				if !ok {
					return
				}
				err := e.fetch(ctx, r)
				// The failure is recorded before the others are stopped,
				// so theirs (context canceled) never takes its place.
				e.done(err)
				if err != nil {
					cancel() // stop the others' requests
				}
			}
		}()
	}
	wg.Wait()
	e.mu.Lock()
	err := e.err
	e.mu.Unlock()
	if err == nil {
		err = ctx.Err()
		if cerr := context.Cause(ctx); err != nil && cerr != nil {
			err = cerr
		}
	}
	return e.received.Load(), err
}

// remaining returns, after run failed, the parts of the ranges not
// written, in offset order.
func (e *rangeEngine) remaining() []Range {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := append(append([]Range(nil), e.left...), e.queue...)
	sort.Slice(out, func(i, j int) bool { return out[i].Off < out[j].Off })
	return out
}

// fetch fetches r and writes it; what it did not write when it fails is
// left for remaining.
func (e *rangeEngine) fetch(ctx context.Context, r Range) error {
	off, err := e.fetchFrom(ctx, r)
	if err != nil && off < r.Off+r.Len {
		e.mu.Lock()
		e.left = append(e.left, Range{off, r.Off + r.Len - off})
		e.mu.Unlock()
	}
	return err
}

// fetchFrom fetches r, asking again from where a cut stopped, and returns
// where it got.
func (e *rangeEngine) fetchFrom(ctx context.Context, r Range) (int64, error) {
	off, end := r.Off, r.Off+r.Len
	tries := 0
	retry := func(cause error) error {
		tries++
		if e.retries < 0 || tries > e.retries {
			return fmt.Errorf("layer %s: bytes %d-%d: still failing at %d after %d retries: %w", e.layer.Digest, r.Off, end-1, off, tries-1, cause)
		}
		select {
		case <-time.After(backoff(tries, e.wait)):
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	for off < end {
		rc, err := e.src.open(ctx, off, end-off)
		var whole *wholeAnswer
		if errors.As(err, &whole) {
			return e.takeWhole(ctx, Range{off, end - off}, whole)
		}
		if err != nil {
			if ctx.Err() != nil {
				return off, ctx.Err()
			}
			var cut cutError
			if !errors.As(err, &cut) {
				return off, err
			}
			if err := retry(err); err != nil {
				return off, err
			}
			continue
		}
		e.answered()
		var cause error
		off, cause = e.copy(ctx, rc, off, end)
		rc.Close()
		if cause == nil {
			continue
		}
		if ctx.Err() != nil {
			return off, ctx.Err()
		}
		var cut cutError
		if !errors.As(cause, &cut) {
			return off, cause
		}
		if err := retry(cause); err != nil {
			return off, err
		}
	}
	return off, nil
}

// answered ends the probe: the source serves ranges, let every worker
// fetch.
func (e *rangeEngine) answered() {
	e.mu.Lock()
	probing := e.probe
	e.probe = false
	n := e.opened
	e.mu.Unlock()
	if n <= 0 {
		n = e.conc
	}
	if probing {
		e.setLimit(n)
	}
}

// takeWhole serves r (the probe's range) and every range queued from a
// whole answer to the probe: read once, from its start to its end, the
// bytes of the ranges written as they pass and the others read past. A
// whole answer to a later request (the source served ranges before) is
// refused: the others are fetching.
func (e *rangeEngine) takeWhole(ctx context.Context, r Range, a *wholeAnswer) (int64, error) {
	defer a.body.Close()
	e.mu.Lock()
	if !e.probe {
		e.mu.Unlock()
		return r.Off, a
	}
	rs := append([]Range{r}, e.queue...)
	e.queue = nil
	e.wholeFrom = a.url
	e.mu.Unlock()
	sort.Slice(rs, func(i, j int) bool { return rs[i].Off < rs[j].Off })
	// fail leaves what is not written, rs[i] from off on and the ranges
	// after it, for the next source (r's part included: fetch is told r
	// is done).
	fail := func(i int, off int64, err error) (int64, error) {
		if g := rs[i]; off < g.Off+g.Len {
			e.leave([]Range{{off, g.Off + g.Len - off}})
		}
		e.leave(rs[i+1:])
		return r.Off + r.Len, err
	}
	var pos int64
	for i, g := range rs {
		if g.Off < pos {
			return fail(i, g.Off, fmt.Errorf("layer %s: ranges overlap at %d", e.layer.Digest, g.Off))
		}
		if g.Off > pos {
			n, err := io.CopyN(io.Discard, a.body, g.Off-pos)
			e.skipped.Add(n)
			if err != nil {
				return fail(i, g.Off, fmt.Errorf("layer %s: the whole answer of %s ended at %d: %w", e.layer.Digest, a.url, pos+n, err))
			}
			pos = g.Off
		}
		off, err := e.copy(ctx, a.body, g.Off, g.Off+g.Len)
		if err != nil {
			return fail(i, off, fmt.Errorf("layer %s: the whole answer of %s: %w", e.layer.Digest, a.url, err))
		}
		pos = g.Off + g.Len
	}
	// To its end (and no further: the answer is untrusted), since a
	// pull-through cache keeps the blob only when it was sent whole. The
	// ranges are written: how the rest goes changes nothing here.
	n, _ := io.CopyN(io.Discard, a.body, e.layer.Size-pos)
	e.skipped.Add(n)
	return r.Off + r.Len, nil
}

// leave adds rs to what remains to fetch.
func (e *rangeEngine) leave(rs []Range) {
	e.mu.Lock()
	e.left = append(e.left, rs...)
	e.mu.Unlock()
}

// copy writes what rc holds of [off, end) at its offsets and returns where
// it stopped: a cutError when the answer ended early, another error when
// the write failed.
func (e *rangeEngine) copy(ctx context.Context, rc io.Reader, off, end int64) (int64, error) {
	for off < end {
		var buf []byte
		select {
		case buf = <-e.free:
		case <-ctx.Done():
			return off, ctx.Err()
		}
		want := int(min(int64(len(buf)), end-off))
		n, rerr := io.ReadFull(rc, buf[:want])
		if n > 0 {
			if _, err := e.w.WriteAt(buf[:n], off); err != nil {
				e.free <- buf
				return off, sinkError{fmt.Errorf("write: %w", err)}
			}
			e.received.Add(int64(n))
			if e.progress != nil {
				e.progMu.Lock()
				e.progress(int64(n))
				e.progMu.Unlock()
			}
			if e.onChunk != nil {
				e.onChunk(buf, n, off)
			} else {
				e.free <- buf
			}
			off += int64(n)
		} else {
			e.free <- buf
		}
		if rerr != nil && off < end {
			return off, cutError{fmt.Errorf("cut at %d: %w", off, rerr)}
		}
	}
	return off, nil
}

// FetchHead returns the first n bytes of layer (all of it when it is
// smaller) with one Range request: what a node reads of an image's header
// (an EROFS superblock) before it decides to download it. A registry that
// answers with the whole blob gets ErrRangeUnsupported and its body is
// closed unread, so the caller never downloads the blob twice. Through
// mirrors the sources are asked in order: one that lacks the blob or
// fails hands over to the next, one that answers with the whole blob ends
// the read-ahead the same way. Nothing is retried: the caller goes on
// without the head.
func FetchHead(ctx context.Context, t Target, layer ocispec.Descriptor, n int64) ([]byte, error) {
	n = min(n, layer.Size)
	if n <= 0 {
		return nil, fmt.Errorf("layer %s: no bytes to read (size %d)", layer.Digest, layer.Size)
	}
	if m, ok := t.(*mirrorTarget); ok {
		return m.head(ctx, layer, n)
	}
	src, err := openRangeSource(t, layer)
	if err != nil {
		return nil, err
	}
	defer src.Close()
	return readHeadFrom(ctx, src, layer, n)
}

// readHeadFrom reads the first n bytes of layer from src with one request.
func readHeadFrom(ctx context.Context, src rangeSource, layer ocispec.Descriptor, n int64) ([]byte, error) {
	rc, err := src.open(ctx, 0, n)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	buf := make([]byte, n)
	if _, err := io.ReadFull(rc, buf); err != nil {
		return nil, fmt.Errorf("layer %s: reading its first %d bytes: %w", layer.Digest, n, err)
	}
	return buf, nil
}
