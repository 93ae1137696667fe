package oci

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"sync"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/registry/remote"
	"oras.land/oras-go/v2/registry/remote/auth"

	"github.com/sysext/sysext/internal/testhook"
)

// earlyUpload is a file going up to a registry before its digest is
// known (distribution spec "chunked upload", in one chunk): a POST opens
// an upload session and one PATCH sends the whole file, while the file is
// hashed beside it; the digest, once known, closes the session with an
// empty PUT. A monolithic PUT ?digest= would have to wait for the digest
// (a whole read of the file) before its first byte is sent.
type earlyUpload struct {
	repo     *remote.Repository
	path     string
	size     int64
	was      fileState // the file before its metadata was read
	progress func(string, int64, int64)
	cancel   context.CancelFunc // stops the PATCH
	done     chan struct{}      // closed when the POST and PATCH ended
	session  *url.URL           // from the POST: what a DELETE ends
	next     *url.URL           // from the PATCH: where the PUT goes
	err      error
	closed   sync.Once // the session ended: closed with its digest or deleted
}

// startEarlyUpload opens an upload session on repo and sends the file at
// path (size bytes) into it, in the background.
func startEarlyUpload(ctx context.Context, repo *remote.Repository, path string, size int64, was fileState, progress func(string, int64, int64)) *earlyUpload {
	ctx = uploadScope(ctx, repo)
	ctx, cancel := context.WithCancel(ctx)
	u := &earlyUpload{repo: repo, path: path, size: size, was: was, progress: progress, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(u.done)
		u.err = u.send(ctx)
	}()
	return u
}

// uploadScope asks for push and pull on repo up front, so that the auth
// client has its token before the PATCH: that body cannot be sent twice.
func uploadScope(ctx context.Context, repo *remote.Repository) context.Context {
	return auth.AppendRepositoryScope(ctx, repo.Reference, auth.ActionPull, auth.ActionPush)
}

func (u *earlyUpload) send(ctx context.Context) error {
	scheme := "https"
	if u.repo.PlainHTTP {
		scheme = "http"
	}
	post := &url.URL{Scheme: scheme, Host: u.repo.Reference.Host(), Path: "/v2/" + u.repo.Reference.Repository + "/blobs/uploads/"}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, post.String(), nil)
	if err != nil {
		return err
	}
	resp, err := u.repo.Client.Do(req)
	if err != nil {
		return fmt.Errorf("open an upload session: %w", err)
	}
	drain(resp)
	if resp.StatusCode != http.StatusAccepted {
		return fmt.Errorf("open an upload session: %w", responseError(resp))
	}
	if u.session, err = location(resp); err != nil {
		return fmt.Errorf("open an upload session: %w", err)
	}
	if hook := testhook.PushFile; hook != nil {
		hook("send", u.path)
	}
	f, err := os.Open(u.path)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := u.was.checkOpen(f); err != nil {
		return err
	}
	// The file itself is the body, so that net/http sends it with
	// sendfile(2); no GetBody: a PATCH cut short is not sent again into
	// the same session (the registry may have kept part of it).
	req, err = http.NewRequestWithContext(ctx, http.MethodPatch, u.session.String(), f)
	if err != nil {
		return err
	}
	req.ContentLength = u.size
	req.Header.Set("Content-Type", "application/octet-stream")
	stop := func() {}
	if u.progress != nil {
		stop = watchOffset(f, u.path, u.size, u.progress)
	}
	resp, err = u.repo.Client.Do(req)
	stop()
	if err != nil {
		return fmt.Errorf("send the blob: %w", err)
	}
	drain(resp)
	if resp.StatusCode != http.StatusAccepted && resp.StatusCode != http.StatusNoContent {
		return fmt.Errorf("send the blob: %w", responseError(resp))
	}
	if u.next, err = location(resp); err != nil {
		return fmt.Errorf("send the blob: %w", err)
	}
	return nil
}

// finish makes the upload the blob desc: when the registry has it
// already, the PATCH is stopped and the session deleted; else the session
// is closed with the digest once the PATCH is through.
func (u *earlyUpload) finish(ctx context.Context, desc ocispec.Descriptor) error {
	ctx = uploadScope(ctx, u.repo)
	if ok, err := u.repo.Exists(ctx, desc); err == nil && ok {
		u.abort(ctx)
		if u.progress != nil {
			u.progress(u.path, desc.Size, desc.Size)
		}
		return nil
	}
	<-u.done
	if u.err == nil {
		// The bytes sent may not be the ones hashed if the file changed:
		// then the session is deleted, not closed (a registry would
		// refuse the digest, but one that the file changed before it
		// was hashed cannot tell).
		u.err = u.was.check(u.path)
	}
	if u.err != nil {
		u.abort(ctx)
		return fmt.Errorf("upload %s: %w", desc.Digest, u.err)
	}
	put := *u.next
	q := "digest=" + url.QueryEscape(desc.Digest.String())
	if put.RawQuery == "" {
		put.RawQuery = q
	} else {
		put.RawQuery += "&" + q
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, put.String(), http.NoBody)
	if err != nil {
		return err
	}
	req.ContentLength = 0
	resp, err := u.repo.Client.Do(req)
	if err != nil {
		u.abort(ctx)
		return fmt.Errorf("upload %s: close the upload session: %w", desc.Digest, err)
	}
	drain(resp)
	if resp.StatusCode != http.StatusCreated {
		u.abort(ctx)
		return fmt.Errorf("upload %s: close the upload session: %w", desc.Digest, responseError(resp))
	}
	u.closed.Do(func() {})
	if u.progress != nil {
		u.progress(u.path, desc.Size, desc.Size)
	}
	return nil
}

// abort stops the PATCH, waits for it and deletes the upload session, if
// one was opened (best effort: the registry expires it anyway).
func (u *earlyUpload) abort(ctx context.Context) {
	u.cancel()
	<-u.done
	u.closed.Do(func() { u.delete(ctx) })
}

func (u *earlyUpload) delete(ctx context.Context) {
	s := u.session
	if u.next != nil {
		s = u.next
	}
	if s == nil {
		return
	}
	ctx = uploadScope(context.WithoutCancel(ctx), u.repo)
	req, err := http.NewRequestWithContext(ctx, http.MethodDelete, s.String(), nil)
	if err != nil {
		return
	}
	if resp, err := u.repo.Client.Do(req); err == nil {
		drain(resp)
	}
}

// location resolves a response's Location header against its request's
// URL (registries give it relative or absolute).
func location(resp *http.Response) (*url.URL, error) {
	l := resp.Header.Get("Location")
	if l == "" {
		return nil, fmt.Errorf("%s %s: the registry answered %s without a Location", resp.Request.Method, resp.Request.URL, resp.Status)
	}
	u, err := resp.Request.URL.Parse(l)
	if err != nil {
		return nil, fmt.Errorf("%s %s: Location %q: %w", resp.Request.Method, resp.Request.URL, l, err)
	}
	return u, nil
}

// drained is what drain leaves of a response's body: its first bytes.
type drained struct{ io.Reader }

func (*drained) Close() error { return nil }

// drain reads a small answer body (kept for responseError) and closes it
// so the connection is used again.
func drain(resp *http.Response) {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 8<<10))
	_, _ = io.CopyN(io.Discard, resp.Body, 64<<10)
	resp.Body.Close()
	resp.Body = &drained{bytes.NewReader(b)}
}
