package oci

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/registry/remote"
	"oras.land/oras-go/v2/registry/remote/auth"
)

// Range is Len bytes of a blob from Off.
type Range struct{ Off, Len int64 }

// ErrRangeUnsupported says the registry answered a Range request with the
// whole blob (200 instead of 206): it cannot serve parts of a blob.
var ErrRangeUnsupported = errors.New("the registry ignores HTTP Range requests (it answered with the whole blob)")

// RangeOptions tune FetchRanges. The zero value is ready to use.
type RangeOptions struct {
	// Concurrency bounds the requests in flight (default 4).
	Concurrency int
	// Progress, when set, is told how many more bytes were written; calls
	// never overlap.
	Progress func(n int64)
}

// Defaults of FetchRanges.
const (
	defaultRangeConcurrency = 4
	// rangeResumes bounds how often one range is asked for again after a
	// cut, each time from where it stopped.
	rangeResumes = 5
	// rangeBuffer is what one request reads before it writes.
	rangeBuffer = 256 << 10
)

// FetchRanges fetches each range of layer from t with one single-range
// request (multi-range answers are not to be relied on: S3 refuses them)
// and writes it at its offset in w, at most opts.Concurrency requests at
// a time; w must take concurrent WriteAt calls at distinct offsets (as
// io.WriterAt promises). A range cut off is asked for again from where it
// stopped, a few times. It returns the bytes written; on the first error
// it stops the other requests. A registry that answers a Range request
// with the whole blob gives ErrRangeUnsupported, at once. The caller
// checks what the bytes are.
func FetchRanges(ctx context.Context, t Target, layer ocispec.Descriptor, ranges []Range, w io.WriterAt, opts RangeOptions) (int64, error) {
	for _, r := range ranges {
		if r.Off < 0 || r.Len <= 0 || r.Off > layer.Size-r.Len {
			return 0, fmt.Errorf("layer %s: range of %d bytes at %d is outside its %d bytes", layer.Digest, r.Len, r.Off, layer.Size)
		}
	}
	workers := opts.Concurrency
	if workers <= 0 {
		workers = defaultRangeConcurrency
	}
	workers = min(workers, len(ranges))
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		mu      sync.Mutex
		fetched int64
		first   error
	)
	progress := func(n int64) {
		mu.Lock()
		defer mu.Unlock()
		fetched += n
		if opts.Progress != nil {
			opts.Progress(n)
		}
	}
	fail := func(err error) {
		mu.Lock()
		defer mu.Unlock()
		if first == nil {
			first = err
			cancel()
		}
	}
	next := make(chan Range)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, rangeBuffer)
			for r := range next {
				if err := fetchRange(ctx, t, layer, r, w, buf, progress); err != nil {
					fail(err)
					return
				}
			}
		}()
	}
feed:
	for _, r := range ranges {
		select {
		case next <- r:
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()
	if first == nil && ctx.Err() != nil {
		first = ctx.Err()
	}
	return fetched, first
}

// fetchRange fetches one range into w, asking again from where it stopped
// after a cut, at most rangeResumes times.
func fetchRange(ctx context.Context, t Target, layer ocispec.Descriptor, r Range, w io.WriterAt, buf []byte, progress func(int64)) error {
	off, end := r.Off, r.Off+r.Len
	for resumes := 0; ; resumes++ {
		rc, err := openRange(ctx, t, layer, off, end)
		if err != nil {
			return err
		}
		var cut error
		for off < end && cut == nil {
			n, err := io.ReadFull(rc, buf[:min(int64(len(buf)), end-off)])
			if n > 0 {
				if _, werr := w.WriteAt(buf[:n], off); werr != nil {
					rc.Close()
					return werr
				}
				off += int64(n)
				progress(int64(n))
			}
			if err != nil && off < end {
				cut = err
			}
		}
		rc.Close()
		if cut == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if resumes == rangeResumes {
			return fmt.Errorf("layer %s: the range %d-%d was cut at %d, still short after %d resumes: %w", layer.Digest, r.Off, end-1, off, resumes, cut)
		}
	}
}

// openRange returns the bytes [off, end) of layer: one GET with a Range
// header from a registry; from another store (a layout), the blob read
// from off.
func openRange(ctx context.Context, t Target, layer ocispec.Descriptor, off, end int64) (io.ReadCloser, error) {
	if repo, ok := t.(*remote.Repository); ok {
		return getRange(ctx, repo, layer, off, end)
	}
	rc, err := t.Fetch(ctx, layer)
	if err != nil {
		return nil, fmt.Errorf("layer %s: %w", layer.Digest, err)
	}
	if ra, ok := rc.(io.ReaderAt); ok {
		return struct {
			io.Reader
			io.Closer
		}{io.NewSectionReader(ra, off, end-off), rc}, nil
	}
	if err := skip(rc, layer, off); err != nil {
		rc.Close()
		return nil, err
	}
	return struct {
		io.Reader
		io.Closer
	}{io.LimitReader(rc, end-off), rc}, nil
}

// getRange asks the registry for the bytes [off, end) of desc and checks
// that the answer is those bytes: 206 with that Content-Range.
func getRange(ctx context.Context, repo *remote.Repository, desc ocispec.Descriptor, off, end int64) (io.ReadCloser, error) {
	ref := repo.Reference
	ref.Reference = desc.Digest.String()
	ctx = auth.AppendRepositoryScope(ctx, ref, auth.ActionPull)
	scheme := "https"
	if repo.PlainHTTP {
		scheme = "http"
	}
	url := fmt.Sprintf("%s://%s/v2/%s/blobs/%s", scheme, ref.Host(), ref.Repository, ref.Reference)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Range", fmt.Sprintf("bytes=%d-%d", off, end-1))
	want := fmt.Sprintf("bytes %d-%d/", off, end-1) // Content-Range, then the size or *
	client := repo.Client
	if client == nil {
		client = auth.DefaultClient
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("GET %s bytes %d-%d: %w", url, off, end-1, err)
	}
	switch resp.StatusCode {
	case http.StatusPartialContent:
		cr := resp.Header.Get("Content-Range")
		if !strings.HasPrefix(cr, want) || (resp.ContentLength != -1 && resp.ContentLength != end-off) {
			resp.Body.Close()
			return nil, fmt.Errorf("GET %s bytes %d-%d: the registry answered %q (%d bytes), not those bytes", url, off, end-1, cr, resp.ContentLength)
		}
		return resp.Body, nil
	case http.StatusOK:
		// Closing unread drops the connection: the whole blob is not read.
		resp.Body.Close()
		return nil, fmt.Errorf("layer %s: %w", desc.Digest, ErrRangeUnsupported)
	case http.StatusNotFound:
		resp.Body.Close()
		return nil, fmt.Errorf("layer %s: %w", desc.Digest, ErrNotFound)
	default:
		resp.Body.Close()
		return nil, fmt.Errorf("GET %s bytes %d-%d: %s", url, off, end-1, resp.Status)
	}
}
