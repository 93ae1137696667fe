package oci

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"syscall"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/content/oci"
	"oras.land/oras-go/v2/errdef"
	"oras.land/oras-go/v2/registry"
	"oras.land/oras-go/v2/registry/remote"
	"oras.land/oras-go/v2/registry/remote/auth"
	"oras.land/oras-go/v2/registry/remote/credentials"
	"oras.land/oras-go/v2/registry/remote/errcode"
)

// Target is one store of artifacts: a registry repository or an OCI image
// layout directory. It is an oras.GraphTarget (Fetch, Push, Exists,
// Resolve, Tag, Predecessors), so oras.Copy and friends work between any
// two, and it lists referrers (the OCI 1.1 referrers API, or the
// sha256-<hex> fallback tag where a registry lacks it; for a layout, the
// manifests whose subject is desc) and tags.
//
// Fetch of a blob from a registry that supports HTTP Range returns an
// io.ReadSeekCloser; seeking re-requests from that offset, which is how
// Download resumes a cut connection.
type Target interface {
	oras.GraphTarget
	registry.ReferrerLister
	registry.TagLister
}

// Narrower views of a Target, for functions that need only part of it (as
// oras-go's own take content.Fetcher or content.ReadOnlyStorage): a caller
// can pass any store, or a wrapper, that does that much.
type (
	// ManifestReader resolves a tag or digest and fetches what it names:
	// what Resolve and Describe read.
	ManifestReader interface {
		content.Resolver
		content.Fetcher
	}
	// AttachedLister finds what hangs off a manifest: referrers and
	// cosign's tags.
	AttachedLister interface {
		content.Resolver
		registry.ReferrerLister
	}
	// CopySource is what Copy reads: content, tags and referrers.
	CopySource interface {
		content.ReadOnlyStorage
		content.Resolver
		registry.ReferrerLister
	}
	// CopyDestination is what Copy writes: content and tags.
	CopyDestination interface {
		content.Storage
		content.Tagger
	}
)

// Options configure access to a store. The zero value is ready to use.
type Options struct {
	// PlainHTTP talks HTTP instead of HTTPS. Loopback registries
	// (localhost, 127.0.0.0/8, ::1) always use plain HTTP.
	PlainHTTP bool
	// Insecure skips TLS certificate verification (--insecure).
	Insecure bool
	// Credentials resolves credentials for a registry host. nil means the
	// user's credential stores (see CredentialStore).
	Credentials auth.CredentialFunc
	// MaxRetries bounds retries of requests answered 408, 429, 5xx or cut
	// off (default 4; negative means none).
	MaxRetries int
	// RetryWait is the ceiling of the first back-off, doubled on each
	// retry (default 250ms, up to 10s; see RetryPolicy).
	RetryWait time.Duration
	// Retry, when set, is the whole retry policy (tests inject its clock,
	// sleeper and randomness); MaxRetries and RetryWait are then unused.
	Retry *RetryPolicy
	// ResponseTimeout bounds the wait for an answer's headers (default
	// 30s): a registry or mirror that accepts the connection and then
	// says nothing counts as failed.
	ResponseTimeout time.Duration
	// UserAgent is sent with every request (default "sysext").
	UserAgent string
	// CreateLayout creates an OCI layout directory that does not exist yet
	// (push and copy destinations). Reading never creates one.
	CreateLayout bool
	// Registries, when set, is the mirror and remapping configuration
	// (LoadRegistries): Open reads a reference its tables name through
	// their mirrors and location, and refuses a blocked one.
	Registries *Registries
	// Log, when set, is told one line each time a mirror fails and the
	// next source is asked.
	Log func(string)
	// plainHTTPFallback: an insecure registry may answer over plain HTTP.
	plainHTTPFallback bool
	// HTTPClient replaces the transport (tests). Retries, auth and the
	// user agent are still layered on top.
	HTTPClient *http.Client
}

// Open returns the store ref lives in. Nothing is contacted yet; errors are
// reported by the first operation. A layout directory that does not exist
// is an error unless opts.CreateLayout.
func Open(ctx context.Context, ref Reference, opts Options) (Target, error) {
	if ref.IsLayout() {
		return openLayout(ctx, ref, opts)
	}
	if opts.Registries != nil {
		return openConfigured(ctx, ref, opts)
	}
	repo, err := remote.NewRepository(ref.Registry + "/" + ref.Repository)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", ref, err)
	}
	repo.PlainHTTP = opts.PlainHTTP || ref.IsLoopback()
	repo.MaxMetadataBytes = MaxManifestSize
	repo.Client = newAuthClient(opts)
	return repo, nil
}

func openLayout(ctx context.Context, ref Reference, opts Options) (Target, error) {
	fi, err := os.Stat(ref.Layout)
	switch {
	case err == nil && !fi.IsDir():
		return nil, fmt.Errorf("%s: %s is not a directory", ref, ref.Layout)
	case errors.Is(err, os.ErrNotExist) && !opts.CreateLayout:
		return nil, fmt.Errorf("%s: no OCI layout at %s: %w", ref, ref.Layout, errdef.ErrNotFound)
	case err != nil && !errors.Is(err, os.ErrNotExist):
		return nil, fmt.Errorf("%s: %w", ref, err)
	}
	if err == nil && !opts.CreateLayout {
		if _, err := os.Stat(filepath.Join(ref.Layout, ocispec.ImageLayoutFile)); err != nil {
			return nil, fmt.Errorf("%s: %s is not an OCI image layout (no %s)", ref, ref.Layout, ocispec.ImageLayoutFile)
		}
	}
	s, err := oci.NewWithContext(ctx, ref.Layout)
	if err != nil {
		return nil, fmt.Errorf("%s: open OCI layout: %w", ref, err)
	}
	return &layoutTarget{Store: s, root: ref.Layout}, nil
}

// layoutTarget adds referrer listing to oras-go's OCI layout store.
type layoutTarget struct {
	*oci.Store
	root string // the layout directory (FetchRanges reads its blob files)
}

// Push is the store's, except that a blob it refuses (bytes that do not
// match desc, a read that failed) leaves no temp file in the layout:
// oras-go v2.6.4 loses the name of its ingest file on those errors (it
// returns "" as the path its cleanup then removes). Another push of the
// same blob into this layout at this moment loses its temp file too, and
// fails: pushing it again fixes that, a leftover would stay for good.
func (l *layoutTarget) Push(ctx context.Context, desc ocispec.Descriptor, r io.Reader) error {
	err := l.Store.Push(ctx, desc, r)
	if err != nil && !errors.Is(err, errdef.ErrAlreadyExists) && desc.Digest.Validate() == nil {
		left, _ := filepath.Glob(filepath.Join(l.root, "ingest", desc.Digest.Encoded()+"_*"))
		for _, p := range left {
			os.Remove(p)
		}
	}
	return err
}

// Referrers lists the manifests in the layout whose subject is desc,
// optionally only those of artifactType.
func (l *layoutTarget) Referrers(ctx context.Context, desc ocispec.Descriptor, artifactType string, fn func([]ocispec.Descriptor) error) error {
	preds, err := l.Store.Predecessors(ctx, desc)
	if err != nil {
		return err
	}
	var out []ocispec.Descriptor
	for _, p := range preds {
		if p.MediaType != ocispec.MediaTypeImageManifest && p.MediaType != ocispec.MediaTypeImageIndex {
			continue
		}
		b, err := content.FetchAll(ctx, l.Store, p)
		if err != nil {
			return err
		}
		var m struct {
			ArtifactType string              `json:"artifactType"`
			Config       ocispec.Descriptor  `json:"config"`
			Subject      *ocispec.Descriptor `json:"subject"`
			Annotations  map[string]string   `json:"annotations"`
		}
		if err := json.Unmarshal(b, &m); err != nil || m.Subject == nil || m.Subject.Digest != desc.Digest {
			continue
		}
		at := m.ArtifactType
		if at == "" && p.MediaType == ocispec.MediaTypeImageManifest {
			at = m.Config.MediaType
		}
		if artifactType != "" && at != artifactType {
			continue
		}
		p.ArtifactType = at
		p.Annotations = m.Annotations
		out = append(out, p)
	}
	if len(out) == 0 {
		return nil
	}
	return fn(out)
}

var _ Target = (*layoutTarget)(nil)
var _ Target = (*remote.Repository)(nil)

func newAuthClient(opts Options) *auth.Client {
	base := opts.HTTPClient
	if base == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		// Large socket reads and no gzip: layers are incompressible images.
		tr.ReadBufferSize = 256 << 10
		tr.WriteBufferSize = 256 << 10
		tr.DisableCompression = true
		tr.DialContext = (&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext
		tr.ResponseHeaderTimeout = opts.ResponseTimeout
		if tr.ResponseHeaderTimeout == 0 {
			tr.ResponseHeaderTimeout = DefaultResponseTimeout
		}
		if opts.Insecure {
			tr.TLSClientConfig = &tls.Config{InsecureSkipVerify: true}
		}
		// Parallel ranges keep their connections between ranges: Go's
		// default keeps 2 idle per host, so with 8 ranges in flight most
		// of them would dial (and over TLS handshake) again for the next.
		tr.MaxIdleConnsPerHost = 2 * defaultConcurrency
		base = &http.Client{Transport: newRangesApart(tr)}
	}
	hc := *base
	tr := base.Transport
	if tr == nil {
		tr = http.DefaultTransport
	}
	if opts.plainHTTPFallback {
		tr = &plainHTTPFallback{base: tr}
	}
	hc.Transport = opts.retryPolicy().Transport(tr)
	cred := opts.Credentials
	if cred == nil {
		cred = func(ctx context.Context, hostport string) (auth.Credential, error) {
			s, err := CredentialStore()
			if err != nil {
				return auth.EmptyCredential, err
			}
			return credentials.Credential(s)(ctx, hostport)
		}
	}
	ua := opts.UserAgent
	if ua == "" {
		ua = "sysext"
	}
	c := &auth.Client{
		Client:     &hc,
		Header:     http.Header{"User-Agent": {ua}},
		Credential: cred,
		Cache:      auth.NewCache(),
	}
	return c
}

// DefaultResponseTimeout is Options.ResponseTimeout's default.
const DefaultResponseTimeout = 30 * time.Second

// retryPolicy is the policy opts ask for.
func (opts Options) retryPolicy() *RetryPolicy {
	if opts.Retry != nil {
		return opts.Retry
	}
	return &RetryPolicy{MaxRetries: opts.MaxRetries, Base: opts.RetryWait}
}

// Explain rewrites registry errors for people: a 401 says which login
// command to run, a missing tag names the reference, a 429/5xx that
// outlasted the retries says so. Other errors pass through. The result
// still wraps err.
func Explain(ref Reference, err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, auth.ErrBasicCredentialNotFound) {
		return fmt.Errorf("%s: the registry requires credentials and none are stored for %s: run 'sysext login %s -u USER --password-stdin'", ref, ref.Registry, ref.Registry)
	}
	var er *errcode.ErrorResponse
	if errors.As(err, &er) {
		switch {
		case er.StatusCode == http.StatusUnauthorized:
			if hasCredentials(ref.Registry) {
				return fmt.Errorf("%s: the registry refused the stored credentials for %s: run 'sysext login %s -u USER --password-stdin' again: %w", ref, ref.Registry, ref.Registry, err)
			}
			return fmt.Errorf("%s: the registry requires credentials and none are stored for %s: run 'sysext login %s -u USER --password-stdin': %w", ref, ref.Registry, ref.Registry, err)
		case er.StatusCode == http.StatusForbidden:
			return fmt.Errorf("%s: access denied by the registry (check your permissions on %s): %w", ref, ref.Scope(), err)
		case er.StatusCode == http.StatusTooManyRequests:
			return fmt.Errorf("%s: the registry keeps answering 429 Too Many Requests after retries; try again later: %w", ref, err)
		case er.StatusCode >= 500:
			return fmt.Errorf("%s: the registry keeps failing (%d %s) after retries; try again later: %w", ref, er.StatusCode, http.StatusText(er.StatusCode), err)
		}
	}
	if errors.Is(err, syscall.ECONNREFUSED) {
		// The host asked, which a registry configuration may have moved.
		host := ref.Registry
		var ue *url.Error
		if errors.As(err, &ue) {
			if u, perr := url.Parse(ue.URL); perr == nil && u.Host != "" {
				host = u.Host
			}
		}
		return fmt.Errorf("%s: nothing answers at %s: check the registry address and that it is running: %w", ref, host, err)
	}
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		return fmt.Errorf("%s: cannot resolve the registry host %s: check the reference's spelling and the node's DNS: %w", ref, dnsErr.Name, err)
	}
	var tlsErr *tls.RecordHeaderError
	if errors.As(err, &tlsErr) {
		return fmt.Errorf("%s: %s does not speak HTTPS: add --plain-http if it is a plain-HTTP registry: %w", ref, ref.Registry, err)
	}
	return err
}

func hasCredentials(host string) bool {
	s, err := CredentialStore()
	if err != nil {
		return false
	}
	c, err := s.Get(context.Background(), credentials.ServerAddressFromHostname(host))
	return err == nil && c != auth.EmptyCredential
}

// rangesApart sends blob range requests over HTTP/1.1, each on a TCP
// connection of its own, and every other request over the transport as
// it is (HTTP/2 where the registry speaks it). Over HTTP/2 all requests
// to a host share one connection, so parallel ranges would share its one
// congestion window and whatever rate a CDN or object store allows per
// connection: the very limit they are there to get past. The small API
// requests (manifests, referrers, uploads) gain from sharing it.
type rangesApart struct {
	api, ranges http.RoundTripper
}

func newRangesApart(tr *http.Transport) *rangesApart {
	h1 := tr.Clone()
	h1.ForceAttemptHTTP2 = false
	h1.Protocols = new(http.Protocols)
	h1.Protocols.SetHTTP1(true)
	if h1.TLSClientConfig != nil {
		// Clone set tr up for HTTP/2 first, and its TLS configuration,
		// copied here, offers h2 in the handshake.
		h1.TLSClientConfig.NextProtos = []string{"http/1.1"}
	}
	return &rangesApart{api: tr, ranges: h1}
}

func (t *rangesApart) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Method == http.MethodGet && r.Header.Get("Range") != "" {
		return t.ranges.RoundTrip(r)
	}
	return t.api.RoundTrip(r)
}
