package oci

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/registry/remote"
	"oras.land/oras-go/v2/registry/remote/auth"
	"oras.land/oras-go/v2/registry/remote/errcode"
)

// fetchFrom opens desc's content at off. From a registry that is our own
// GET (with a Range header past 0), so that a length that is not the
// descriptor's is a SizeMismatchError rather than oras-go's untyped error,
// and because oras-go's Fetch always asks for the whole blob first:
// whatever the registry pushes into that answer before a seek drops it
// (MiBs on a fast link) is sent again for nothing. The reader seeks (a new
// Range request) like oras-go's, for resuming after a cut. Other stores go
// through Fetch.
func fetchFrom(ctx context.Context, f content.Fetcher, desc ocispec.Descriptor, off int64) (io.ReadCloser, error) {
	repo, ok := f.(*remote.Repository)
	if !ok || off >= desc.Size {
		rc, err := f.Fetch(ctx, desc)
		if err != nil {
			return nil, err
		}
		if err := skip(rc, desc, off); err != nil {
			rc.Close()
			return nil, err
		}
		return rc, nil
	}
	r := &rangeReader{ctx: ctx, repo: repo, desc: desc, body: http.NoBody}
	if _, err := r.Seek(off, io.SeekStart); err != nil {
		return nil, err
	}
	return r, nil
}

// skip moves rc to off: by seeking where it can (to the end first, which
// drops the connection Fetch opened), else by reading and dropping.
func skip(rc io.Reader, desc ocispec.Descriptor, off int64) error {
	if off == 0 {
		return nil
	}
	if sk, ok := rc.(io.Seeker); ok {
		_, _ = sk.Seek(desc.Size, io.SeekStart)
		if _, err := sk.Seek(off, io.SeekStart); err != nil {
			return fmt.Errorf("layer %s: resume at %d of %d bytes: %w", desc.Digest, off, desc.Size, err)
		}
		return nil
	}
	if _, err := io.CopyN(io.Discard, rc, off); err != nil {
		return fmt.Errorf("layer %s: skip the %d bytes already stored: %w", desc.Digest, off, err)
	}
	return nil
}

// rangeReader reads a registry blob from an offset on; Seek asks again
// from the new offset.
type rangeReader struct {
	ctx  context.Context
	repo *remote.Repository
	desc ocispec.Descriptor
	body io.ReadCloser
	off  int64
	// ranged: the last answer was a range (206) or said the registry
	// serves them (Accept-Ranges: bytes).
	ranged bool
}

// servesRanges reports whether rc, a stream's answer, came from a source
// that says it serves byte ranges.
func servesRanges(rc io.Reader) bool {
	r, ok := rc.(*rangeReader)
	return ok && r.ranged
}

func (r *rangeReader) Read(p []byte) (int, error) {
	n, err := r.body.Read(p)
	r.off += int64(n)
	return n, err
}

func (r *rangeReader) Close() error { return r.body.Close() }

// Seek (io.SeekStart only) drops the current answer and, below the end,
// requests the blob from off on (the whole blob, without a Range header, at
// 0). A refusal is an errcode.ErrorResponse, as oras-go's, so Explain words
// it.
func (r *rangeReader) Seek(off int64, whence int) (int64, error) {
	if whence != io.SeekStart || off < 0 {
		return r.off, errors.New("seek: only to an offset from the start")
	}
	r.body.Close()
	r.body, r.off = http.NoBody, off
	if off >= r.desc.Size {
		return off, nil
	}
	ref := r.repo.Reference
	ref.Reference = r.desc.Digest.String()
	ctx := auth.AppendRepositoryScope(r.ctx, ref, auth.ActionPull)
	scheme := "https"
	if r.repo.PlainHTTP {
		scheme = "http"
	}
	url := fmt.Sprintf("%s://%s/v2/%s/blobs/%s", scheme, ref.Host(), ref.Repository, ref.Reference)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return r.off, err
	}
	if off > 0 {
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-%d", off, r.desc.Size-1))
	}
	client := r.repo.Client
	if client == nil {
		client = auth.DefaultClient
	}
	resp, err := client.Do(req)
	if err != nil {
		return r.off, fmt.Errorf("GET %s from %d: %w", url, off, err)
	}
	switch resp.StatusCode {
	case http.StatusPartialContent:
		if n := resp.ContentLength; n != -1 && n != r.desc.Size-off {
			resp.Body.Close()
			return r.off, sizeMismatch(r.desc)
		}
		r.body, r.ranged = resp.Body, true
	case http.StatusOK: // the registry ignored Range: drop what we have
		r.ranged = off == 0 && resp.Header.Get("Accept-Ranges") == "bytes"
		if n := resp.ContentLength; n != -1 && n != r.desc.Size {
			resp.Body.Close()
			return r.off, sizeMismatch(r.desc)
		}
		if _, err := io.CopyN(io.Discard, resp.Body, off); err != nil {
			resp.Body.Close()
			return r.off, fmt.Errorf("GET %s: skip the %d bytes already stored: %w", url, off, err)
		}
		r.body = resp.Body
	case http.StatusNotFound:
		resp.Body.Close()
		return r.off, fmt.Errorf("%s: %w", r.desc.Digest, ErrNotFound)
	default:
		defer resp.Body.Close()
		return r.off, errorResponse(resp)
	}
	return off, nil
}

// errorResponse is a registry's refusal as oras-go reports it (the status
// and the errors in the body), so errors.As finds an
// errcode.ErrorResponse.
func errorResponse(resp *http.Response) error {
	var body struct {
		Errors errcode.Errors `json:"errors"`
	}
	_ = json.NewDecoder(io.LimitReader(resp.Body, 8<<10)).Decode(&body)
	return &errcode.ErrorResponse{Method: resp.Request.Method, URL: resp.Request.URL, StatusCode: resp.StatusCode, Errors: body.Errors}
}
