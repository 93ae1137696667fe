package oci

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/sysext/sysext/internal/mediatype"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/registry/remote"
	"oras.land/oras-go/v2/registry/remote/errcode"
)

// ErrBlocked is wrapped by the error of Open for a reference whose
// registry configuration says blocked = true.
var ErrBlocked = errors.New("blocked by the registry configuration")

// ErrDigestMismatch is wrapped by errors for content whose bytes do not
// match the digest that names it.
var ErrDigestMismatch = errors.New("content does not match its digest")

// SourceEvent says which source answered one read of a pull through
// mirrors, or failed it (Error set; the next source was asked).
type SourceEvent struct {
	What   string `json:"what"`   // "tag 24", "index sha256:…", "manifest sha256:…", "layer sha256:…", "head of layer sha256:…", "signatures"
	Source string `json:"source"` // host/repository asked
	Mirror bool   `json:"mirror,omitempty"`
	Error  string `json:"error,omitempty"`
}

// source is one repository an artifact is read from: a mirror or the
// origin.
type source struct {
	name   string // host/repository
	mirror bool
	// tags: may answer what a tag points to; digests: may serve content
	// named by digest (pull-from-mirror).
	tags, digests bool
	repo          *remote.Repository
}

// mirrorTarget reads an artifact through the mirrors of its registry
// configuration, then its origin: content named by digest from any of
// them (checked against the digest; a source that answers wrong bytes is
// not asked for that digest again), what a tag points to from those that
// pull-from-mirror allows. Writes go to the origin. Each fallback is one
// line to log and an event.
type mirrorTarget struct {
	ref     Reference // as the user named it: the identity signatures are checked for
	sources []*source // mirrors in order, then the origin
	policy  *RetryPolicy
	log     func(string)
	label   string // "signatures" for the view verify reads through
	st      *mirrorState
}

type mirrorState struct {
	mu     sync.Mutex
	events []SourceEvent
	// bad lists, per digest, the sources that served bytes that did not
	// match it.
	bad map[digest.Digest]map[string]bool
	// noTags lists mirrors whose answer for a tag did not verify.
	noTags map[string]bool
	// tagSource is the source that last answered for a tag.
	tagSource map[string]*source
	// down lists mirrors that could not be reached or kept failing: not
	// asked again for this pull.
	down map[string]bool
}

var _ Target = (*mirrorTarget)(nil)

// Open's path for references that a registry configuration names.
func openConfigured(ctx context.Context, ref Reference, opts Options) (Target, error) {
	rt, err := opts.Registries.find(ref)
	if err != nil {
		return nil, err
	}
	if rt == nil {
		return openRepository(ref, ref.Registry+"/"+ref.Repository, opts, false, false)
	}
	if rt.entry.Blocked {
		return nil, fmt.Errorf("%s: %w: %s says blocked = true", ref, ErrBlocked, rt.entry.From)
	}
	origin, err := openRepository(ref, rt.origin, opts, rt.entry.Insecure, false)
	if err != nil {
		return nil, err
	}
	if len(rt.mirrors) == 0 {
		return origin, nil
	}
	byDigest := ref.Digest != ""
	mt := &mirrorTarget{ref: ref, policy: opts.retryPolicy(), log: opts.Log, st: &mirrorState{}}
	for _, m := range rt.mirrors {
		if byDigest && m.PullFromMirror == MirrorTagOnly {
			continue // tag-only mirrors are not asked for a pinned reference
		}
		repo, err := openRepository(ref, m.repo, opts, m.Insecure, true)
		if err != nil {
			return nil, err
		}
		mt.sources = append(mt.sources, &source{name: m.repo, mirror: true, repo: repo,
			tags: !byDigest && m.PullFromMirror != MirrorDigestOnly, digests: true})
	}
	mt.sources = append(mt.sources, &source{name: rt.origin, tags: true, digests: true, repo: origin})
	if len(mt.sources) == 1 {
		return origin, nil
	}
	return mt, nil
}

// openRepository opens the registry repository name (host/repository)
// for ref. A mirror retries only what the registry asked to be retried
// (Retry-After): otherwise the next source is quicker. insecure allows
// unverified TLS and plain HTTP.
func openRepository(ref Reference, name string, opts Options, insecure, mirror bool) (*remote.Repository, error) {
	repo, err := remote.NewRepository(name)
	if err != nil {
		return nil, fmt.Errorf("%s: %s: %w", ref, name, err)
	}
	repo.PlainHTTP = opts.PlainHTTP || IsLoopbackHost(repo.Reference.Registry)
	repo.MaxMetadataBytes = MaxManifestSize
	o := opts
	if insecure {
		o.Insecure, o.plainHTTPFallback = true, true
	}
	if mirror {
		p := *opts.retryPolicy()
		p.OnlyWhenAsked = true
		o.Retry = &p
	}
	repo.Client = newAuthClient(o)
	return repo, nil
}

// view is m reading only from srcs (nil: all), or labelled for events.
func (m *mirrorTarget) view(label string, srcs []*source) *mirrorTarget {
	v := *m
	v.label = label
	if srcs != nil {
		v.sources = srcs
	}
	return &v
}

func (m *mirrorTarget) origin() *source { return m.sources[len(m.sources)-1] }

// contentSources are the sources that may serve d, in order.
func (m *mirrorTarget) contentSources(d digest.Digest) []*source {
	m.st.mu.Lock()
	defer m.st.mu.Unlock()
	var out []*source
	for _, s := range m.sources {
		if s.digests && !m.st.bad[d][s.name] && !m.st.down[s.name] || !s.mirror {
			out = append(out, s)
		}
	}
	return out
}

// tagSources are the sources that may say what a tag points to.
func (m *mirrorTarget) tagSources() []*source {
	m.st.mu.Lock()
	defer m.st.mu.Unlock()
	var out []*source
	for _, s := range m.sources {
		if s.tags && !m.st.noTags[s.name] && !m.st.down[s.name] || !s.mirror {
			out = append(out, s)
		}
	}
	return out
}

func (m *mirrorTarget) event(e SourceEvent) {
	m.st.mu.Lock()
	defer m.st.mu.Unlock()
	for _, old := range m.st.events {
		if old == e {
			return
		}
	}
	m.st.events = append(m.st.events, e)
}

func (m *mirrorTarget) served(what string, s *source) {
	m.event(SourceEvent{What: m.what(what), Source: s.name, Mirror: s.mirror})
}

func (m *mirrorTarget) what(what string) string {
	if m.label != "" {
		return m.label
	}
	return what
}

// next reports a failure of srcs[i] and whether to ask srcs[i+1]. A
// signature a mirror does not have is not worth a line: most lookups for
// signature formats find nothing anywhere. Nor is it asked of the origin:
// when what the mirrors hold does not verify, the node reads the origin's
// signatures itself (Origin); asking the origin for every format the
// mirrors lack would cost it a request per node per pull.
func (m *mirrorTarget) next(ctx context.Context, what string, srcs []*source, i int, err error) bool {
	s := srcs[i]
	if m.label != "" && errors.Is(err, ErrNotFound) && i < len(srcs)-1 && ctx.Err() == nil {
		return srcs[i+1].mirror
	}
	if ctx.Err() != nil || i == len(srcs)-1 {
		if i > 0 || s.mirror {
			m.event(SourceEvent{What: m.what(what), Source: s.name, Mirror: s.mirror, Error: err.Error()})
		}
		return false
	}
	m.event(SourceEvent{What: m.what(what), Source: s.name, Mirror: s.mirror, Error: err.Error()})
	if s.mirror && unavailable(err) {
		m.st.mu.Lock()
		if m.st.down == nil {
			m.st.down = map[string]bool{}
		}
		m.st.down[s.name] = true
		m.st.mu.Unlock()
	}
	kind := "mirror"
	if !s.mirror {
		kind = "registry"
	}
	if m.log != nil {
		m.log(fmt.Sprintf("%s: %s from %s %s failed: %v; trying %s", m.ref, m.what(what), kind, s.name, oneLine(err), srcs[i+1].name))
	}
	return true
}

// unavailable says err means the source is down or overloaded (no
// connection, no answer, 5xx or 429 after its retries), not that it lacks
// or mangled one item: it is not asked again in this pull.
func unavailable(err error) bool {
	var ne net.Error
	if errors.As(err, &ne) {
		return true
	}
	var er *errcode.ErrorResponse
	if errors.As(err, &er) {
		return er.StatusCode >= 500 || er.StatusCode == http.StatusTooManyRequests
	}
	var oe *net.OpError
	return errors.As(err, &oe)
}

func oneLine(err error) string {
	s := err.Error()
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	return s
}

func describe(desc ocispec.Descriptor) string {
	kind := "blob"
	switch {
	case mediatype.IsIndex(desc.MediaType):
		kind = "index"
	case mediatype.IsManifest(desc.MediaType):
		kind = "manifest"
	}
	return kind + " " + shortDigestString(desc.Digest)
}

func shortDigestString(d digest.Digest) string {
	s := d.String()
	if len(s) > len("sha256:")+12 {
		s = s[:len("sha256:")+12]
	}
	return s
}

func (m *mirrorTarget) markBad(d digest.Digest, s *source) {
	if !s.mirror {
		return // the origin is the authority: its answer is final
	}
	m.st.mu.Lock()
	defer m.st.mu.Unlock()
	if m.st.bad == nil {
		m.st.bad = map[digest.Digest]map[string]bool{}
	}
	if m.st.bad[d] == nil {
		m.st.bad[d] = map[string]bool{}
	}
	m.st.bad[d][s.name] = true
}

// maxVerifiedFetch is the largest blob Fetch reads whole and checks
// before handing it on, so that a mirror's wrong bytes make it ask the
// next source (manifests, signatures, configs). Larger blobs are the
// image itself: Download checks those and asks again.
const maxVerifiedFetch = MaxManifestSize

// Fetch reads desc from the first source that has it. Up to
// maxVerifiedFetch bytes are checked against desc's size and digest here.
func (m *mirrorTarget) Fetch(ctx context.Context, desc ocispec.Descriptor) (io.ReadCloser, error) {
	what := describe(desc)
	srcs := m.contentSources(desc.Digest)
	var lastErr error
	for i, s := range srcs {
		rc, err := s.repo.Fetch(ctx, desc)
		if err == nil && desc.Size <= maxVerifiedFetch {
			var b []byte
			b, err = readVerified(rc, desc)
			rc.Close()
			if errors.Is(err, ErrDigestMismatch) {
				m.markBad(desc.Digest, s)
			}
			if err == nil {
				rc = io.NopCloser(bytes.NewReader(b))
			}
		}
		if err == nil {
			m.served(what, s)
			return rc, nil
		}
		lastErr = err
		if !m.next(ctx, what, srcs, i, err) {
			break
		}
	}
	return nil, lastErr
}

// readVerified reads desc's content whole and checks size and digest.
func readVerified(r io.Reader, desc ocispec.Descriptor) ([]byte, error) {
	if err := desc.Digest.Validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", desc.Digest, err)
	}
	b, err := io.ReadAll(io.LimitReader(r, desc.Size+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", describe(desc), err)
	}
	if int64(len(b)) != desc.Size {
		return nil, fmt.Errorf("%s: %w: %d bytes, not the %d its descriptor says", describe(desc), ErrDigestMismatch, len(b), desc.Size)
	}
	if got := desc.Digest.Algorithm().FromBytes(b); got != desc.Digest {
		return nil, fmt.Errorf("%s: %w (got %s)", describe(desc), ErrDigestMismatch, got)
	}
	return b, nil
}

// sigTag matches the tags cosign and the referrers fallback derive from a
// digest: they are asked like content by digest, whatever
// pull-from-mirror says, because what they hold is checked against the
// digest cryptographically.
var sigTag = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^sha256-[0-9a-f]{64}(\.sig|\.att|\.sbom)?$`) })

// Resolve asks what reference (a tag or a digest) points to.
func (m *mirrorTarget) Resolve(ctx context.Context, reference string) (ocispec.Descriptor, error) {
	d, derr := digest.Parse(reference)
	var srcs []*source
	what := "tag " + reference
	switch {
	case derr == nil:
		srcs, what = m.contentSources(d), "manifest "+shortDigestString(d)
	case sigTag().MatchString(reference):
		srcs = m.contentSources("")
	default:
		srcs = m.tagSources()
	}
	var lastErr error
	for i, s := range srcs {
		desc, err := s.repo.Resolve(ctx, reference)
		if err == nil && derr == nil && desc.Digest != d {
			err = fmt.Errorf("asked for %s, answered %s: %w", d, desc.Digest, ErrDigestMismatch)
			m.markBad(d, s)
		}
		if err == nil {
			if derr != nil {
				m.rememberTag(reference, s)
			}
			m.served(what, s)
			return desc, nil
		}
		lastErr = err
		if !m.next(ctx, what, srcs, i, err) {
			break
		}
	}
	return ocispec.Descriptor{}, lastErr
}

// Exists asks the sources in turn; a mirror that lacks desc is not the
// last word.
func (m *mirrorTarget) Exists(ctx context.Context, desc ocispec.Descriptor) (bool, error) {
	srcs := m.contentSources(desc.Digest)
	var lastErr error
	for i, s := range srcs {
		ok, err := s.repo.Exists(ctx, desc)
		if err == nil && (ok || !s.mirror) {
			return ok, nil
		}
		if err == nil {
			err = fmt.Errorf("%s: %w", describe(desc), ErrNotFound)
		}
		lastErr = err
		if !m.next(ctx, describe(desc), srcs, i, err) {
			break
		}
	}
	return false, lastErr
}

// maxMirrorReferrers bounds what one source's referrers listing may hold
// (an extension has a few signatures and attestations).
const maxMirrorReferrers = 1000

// Referrers lists desc's referrers from the first source that answers.
// Each source's listing is collected whole before fn sees it, so a source
// that fails halfway adds nothing.
func (m *mirrorTarget) Referrers(ctx context.Context, desc ocispec.Descriptor, artifactType string, fn func([]ocispec.Descriptor) error) error {
	what := "referrers of " + shortDigestString(desc.Digest)
	srcs := m.contentSources("")
	var lastErr error
	for i, s := range srcs {
		var all []ocispec.Descriptor
		err := s.repo.Referrers(ctx, desc, artifactType, func(p []ocispec.Descriptor) error {
			all = append(all, p...)
			if len(all) > maxMirrorReferrers {
				return fmt.Errorf("more than %d referrers", maxMirrorReferrers)
			}
			return nil
		})
		if err == nil {
			m.served(what, s)
			if len(all) == 0 {
				return nil
			}
			return fn(all)
		}
		lastErr = err
		if !m.next(ctx, what, srcs, i, err) {
			break
		}
	}
	return lastErr
}

// Predecessors lists what refers to node (referrers), as Referrers does.
func (m *mirrorTarget) Predecessors(ctx context.Context, node ocispec.Descriptor) ([]ocispec.Descriptor, error) {
	var out []ocispec.Descriptor
	err := m.Referrers(ctx, node, "", func(p []ocispec.Descriptor) error {
		out = append(out, p...)
		return nil
	})
	return out, err
}

// Push, Tag and Tags go to the origin: mirrors are for reading.
func (m *mirrorTarget) Push(ctx context.Context, expected ocispec.Descriptor, r io.Reader) error {
	return m.origin().repo.Push(ctx, expected, r)
}

func (m *mirrorTarget) Tag(ctx context.Context, desc ocispec.Descriptor, reference string) error {
	return m.origin().repo.Tag(ctx, desc, reference)
}

func (m *mirrorTarget) Tags(ctx context.Context, last string, fn func([]string) error) error {
	return m.origin().repo.Tags(ctx, last, fn)
}

// download downloads layer into w from the sources in turn: a source that
// fails (after its own resumes) hands over at the offset reached, since
// the bytes are the same wherever they come from; the digest is checked
// over the whole at the end. Into a Writer that knows its ranges, a large
// download streamed from a source may hand over to parallel ranges as
// from a registry (streamThenRest), served by that source and, when it
// fails, the sources after it (rangesFrom); a mirror's stream hands over
// only when its answer says it serves ranges (Accept-Ranges, or a 206): a
// pull-through cache that does not hold the blob yet streams it from its
// upstream without saying so, and keeps its copy only when read to the
// end. It returns the resumes and the sources that wrote bytes.
func (m *mirrorTarget) download(ctx context.Context, layer ocispec.Descriptor, w Writer, opts DownloadOptions) (int, []*source, error) {
	what := "layer " + shortDigestString(layer.Digest)
	srcs := m.contentSources(layer.Digest)
	rw, ranged := w.(rangeWriter)
	var used []*source
	total := 0
	var lastErr error
	for i, s := range srcs {
		if ranged && stoppedParallel(rw.Missing(), layer.Size) {
			// A parallel download stopped, here or in an earlier run:
			// what is missing, as ranges, from this source on.
			resumes, u, err := m.fetchRest(ctx, srcs[i:], layer, rw, toRanges(rw.Missing()), 0, opts, closed)
			return total + resumes, append(used, u...), err
		}
		before := w.Offset()
		var resumes int
		var err error
		var restUsed []*source
		var restErr error
		handed := false
		if ranged && mayGoParallel(layer, before, opts) {
			o := opts
			o.rangedOnly = s.mirror
			resumes, handed, err = streamThenRest(ctx, s.repo, layer, rw, before, o, func(ctx context.Context, rs []Range, rate float64, hashFrom <-chan struct{}) (int, error) {
				n, u, err := m.fetchRest(ctx, srcs[i:], layer, rw, rs, rate, opts, hashFrom)
				restUsed, restErr = u, err
				return n, err
			})
		} else {
			resumes, err = stream(ctx, s.repo, layer, w, before, opts, nil)
		}
		total += resumes
		if err == nil || w.Offset() > before {
			used = append(used, s)
		}
		for _, u := range restUsed {
			if u != s {
				used = append(used, u)
			}
		}
		if err == nil {
			if !handed {
				m.served(what, s) // else the rest's last source said so
			}
			return total, used, nil
		}
		lastErr = err
		var we *writeError
		var se sinkError
		if errors.As(err, &we) || errors.As(err, &se) || errors.Is(err, ErrChunkMismatch) {
			break
		}
		// The rest went through every source after this one already;
		// a stream cut after the handover leaves holes for the next.
		if handed && restErr != nil && !errors.Is(restErr, context.Canceled) {
			break
		}
		if !m.next(ctx, what, srcs, i, err) {
			break
		}
	}
	return total, used, lastErr
}

// head is FetchHead through mirrors: the sources in order, a failure
// (the blob missing, an error, a cut answer) handing over to the next in
// one line. A whole answer (200) stops there, closed unread, as from a
// registry: the blob is never read twice, and asking the next source
// would cost it a request the download makes anyway.
func (m *mirrorTarget) head(ctx context.Context, layer ocispec.Descriptor, n int64) ([]byte, error) {
	what := "head of layer " + shortDigestString(layer.Digest)
	srcs := m.contentSources(layer.Digest)
	var lastErr error
	for i, s := range srcs {
		b, err := readHeadFrom(ctx, newRegistrySource(s.repo, layer), layer, n)
		if err == nil {
			m.served(what, s)
			return b, nil
		}
		lastErr = err
		if errors.Is(err, ErrRangeUnsupported) || !m.next(ctx, what, srcs, i, err) {
			break
		}
	}
	return nil, lastErr
}

// fetchRest fetches ranges of layer into w in parallel from srcs in order
// (rangesFrom), hashing as fetchParallel does; a last source that does not
// serve ranges streams what is missing from the written prefix on.
func (m *mirrorTarget) fetchRest(ctx context.Context, srcs []*source, layer ocispec.Descriptor, w rangeWriter, ranges []Range, rate float64, opts DownloadOptions, hashFrom <-chan struct{}) (int, []*source, error) {
	var used []*source
	err := runParallel(ctx, layer, w, rate, opts, hashFrom, func(ctx context.Context, ro RangeOptions, setup engineSetup) error {
		var err error
		_, _, used, err = m.rangesFrom(ctx, srcs, layer, ranges, w, ro, setup)
		return err
	})
	if !errors.Is(err, ErrRangeUnsupported) {
		return 0, used, err
	}
	<-hashFrom
	if err := w.HashTo(ctx, w.Offset()); err != nil {
		return 0, used, fmt.Errorf("layer %s: %w", layer.Digest, err)
	}
	last := srcs[len(srcs)-1]
	resumes, err := stream(ctx, last.repo, layer, w, w.Offset(), opts, nil)
	if err == nil {
		m.served("layer "+shortDigestString(layer.Digest), last)
	}
	return resumes, append(used, last), err
}

// ranges fetches ranges of layer (FetchRanges through mirrors) from the
// sources that may serve it, in order, each a registry (registrySource:
// auth, redirects, retries). A source that fails (it lacks the blob,
// refuses Range, keeps failing past the retries) hands the ranges it did
// not write to the next, in one line; a chunk that does not match
// (ErrChunkMismatch, from w) stops the fetch and the mirror that sent it
// is not asked for the layer again. A mirror is asked one range first: a
// whole answer to it (a pull-through cache that does not hold the blob
// yet, a mirror that ignores Range) is read once, to its end, and serves
// every range (takeWhole), so the cache keeps its copy and its upstream
// sends the blob once. It returns the bytes written, those read past, and
// the sources that sent bytes.
func (m *mirrorTarget) ranges(ctx context.Context, layer ocispec.Descriptor, ranges []Range, w io.WriterAt, opts RangeOptions) (written, skipped int64, used []*source, err error) {
	return m.rangesFrom(ctx, m.contentSources(layer.Digest), layer, ranges, w, opts, nil)
}

// rangesFrom is ranges from srcs; setup, when set, readies each source's
// engine (a full download's parallel ranges: shared buffers and hasher,
// part size, ramp).
func (m *mirrorTarget) rangesFrom(ctx context.Context, srcs []*source, layer ocispec.Descriptor, ranges []Range, w io.WriterAt, opts RangeOptions, setup engineSetup) (written, skipped int64, used []*source, err error) {
	what := "layer " + shortDigestString(layer.Digest)
	left := ranges
	for i, s := range srcs {
		src := newRegistrySource(s.repo, layer)
		src.whole = s.mirror
		e := newRangeEngine(src, layer, w, opts)
		e.queue = append(e.queue, left...)
		e.limit = e.conc
		after := func() {}
		if setup != nil {
			after = setup(e)
		}
		if s.mirror {
			e.mu.Lock() // the ramp, started by setup, reads the limit
			e.opened = e.limit
			e.probe, e.limit = true, 1
			e.mu.Unlock()
		}
		var n int64
		n, err = e.run(ctx)
		after()
		written += n
		skipped += e.skipped.Load()
		if n > 0 || e.skipped.Load() > 0 {
			used = append(used, s)
		}
		if e.wholeFrom != "" && m.log != nil {
			m.log(fmt.Sprintf("%s: %s: mirror %s answered with the whole blob, not the ranges asked for (a pull-through cache fetching it, or no Range support): read once, the chunks taken as they pass", m.ref, what, s.name))
		}
		if err == nil {
			m.served(what, s)
			return written, skipped, used, nil
		}
		var se sinkError
		switch {
		case errors.Is(err, ErrChunkMismatch):
			m.markBad(layer.Digest, s)
			m.event(SourceEvent{What: what, Source: s.name, Mirror: s.mirror, Error: oneLine(err)})
			if s.mirror {
				err = fmt.Errorf("from mirror %s, not asked for it again: %w", s.name, err)
			}
			return written, skipped, used, err
		case ctx.Err() != nil, errors.As(err, &se):
			return written, skipped, used, err
		}
		left = e.remaining()
		if !m.next(ctx, what, srcs, i, err) {
			break
		}
	}
	return written, skipped, used, err
}

// wrongLayer is the error for a layer whose bytes did not match: the
// mirrors that served them are not asked for it again.
func (m *mirrorTarget) wrongLayer(layer ocispec.Descriptor, got digest.Digest, used []*source) error {
	err := m.blame(layer, got, used)
	if err.mirror && m.log != nil {
		m.log(fmt.Sprintf("%s: layer %s from mirror %s: the bytes do not match the digest, dropped; trying %s", m.ref, shortDigestString(layer.Digest), strings.Join(err.from, ", "), m.contentSources(layer.Digest)[0].name))
	}
	return err
}

// blame marks the mirrors in used bad for layer, whose bytes as they
// served them did not match (got), and returns the error saying so: a
// delta download's caller says it in its own line.
func (m *mirrorTarget) blame(layer ocispec.Descriptor, got digest.Digest, used []*source) *wrongLayerError {
	var names []string
	mirror := false
	what := "layer " + shortDigestString(layer.Digest)
	for _, s := range used {
		m.markBad(layer.Digest, s)
		names = append(names, s.name)
		mirror = mirror || s.mirror
		m.event(SourceEvent{What: what, Source: s.name, Mirror: s.mirror, Error: "the bytes do not match the digest"})
	}
	return &wrongLayerError{digest: layer.Digest, got: got, from: names, mirror: mirror}
}

type wrongLayerError struct {
	digest, got digest.Digest
	from        []string
	mirror      bool
}

func (e *wrongLayerError) Error() string {
	s := fmt.Sprintf("layer %s: the bytes received do not match the digest (got %s), served by %s", e.digest, e.got, strings.Join(e.from, ", "))
	if e.mirror {
		s += ": that mirror is not asked for this layer again"
	}
	return s
}

func (e *wrongLayerError) Is(target error) bool { return target == ErrDigestMismatch }

// RetryElsewhere reports whether err is a download whose bytes came
// (partly) from a mirror and did not match: a new download from t asks
// the other sources.
func RetryElsewhere(t content.Fetcher, err error) bool {
	var we *wrongLayerError
	_, ok := t.(*mirrorTarget)
	return ok && errors.As(err, &we) && we.mirror
}

// SourceEvents lists which source answered each kind of read of t, and
// which failed first, when t reads through mirrors (nil otherwise).
func SourceEvents(t content.Fetcher) []SourceEvent {
	m, ok := t.(*mirrorTarget)
	if !ok {
		return nil
	}
	m.st.mu.Lock()
	defer m.st.mu.Unlock()
	return append([]SourceEvent(nil), m.st.events...)
}

// SignatureSource is t for reading signatures: the same sources, with the
// events labelled "signatures".
func SignatureSource(t Target) Target {
	if m, ok := t.(*mirrorTarget); ok {
		return m.view("signatures", nil)
	}
	return t
}

// Origin returns t restricted to its origin, and true, when t reads
// through mirrors: signatures that did not verify as a mirror served them
// are read again from the origin.
func Origin(t Target) (Target, bool) {
	m, ok := t.(*mirrorTarget)
	if !ok {
		return t, false
	}
	return m.view(m.label, []*source{m.origin()}), true
}

// rememberTag records s as the source that said what tag points to, for
// RejectTagSource.
func (m *mirrorTarget) rememberTag(tag string, s *source) {
	m.st.mu.Lock()
	defer m.st.mu.Unlock()
	if m.st.tagSource == nil {
		m.st.tagSource = map[string]*source{}
	}
	m.st.tagSource[tag] = s
}

// RejectTagSource stops asking the mirror that said what tag points to
// (its answer did not verify) and returns its name; false when the origin
// answered or t has no mirrors. Resolving tag again asks the next source.
func RejectTagSource(t Target, tag string) (string, bool) {
	m, ok := t.(*mirrorTarget)
	if !ok {
		return "", false
	}
	m.st.mu.Lock()
	defer m.st.mu.Unlock()
	s := m.st.tagSource[tag]
	if s == nil || !s.mirror {
		return "", false
	}
	if m.st.noTags == nil {
		m.st.noTags = map[string]bool{}
	}
	m.st.noTags[s.name] = true
	delete(m.st.tagSource, tag)
	return s.name, true
}

// plainHTTPFallback lets an insecure registry be spoken to over plain
// HTTP: a request over HTTPS that meets a plain-HTTP server is sent again
// over HTTP, and so is every later one.
type plainHTTPFallback struct {
	base  http.RoundTripper
	plain atomic.Bool
}

func (p *plainHTTPFallback) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Scheme == "https" && p.plain.Load() {
		return p.base.RoundTrip(toPlain(req))
	}
	resp, err := p.base.RoundTrip(req)
	if err != nil && req.URL.Scheme == "https" && isPlainHTTPAnswer(err) && (req.Body == nil || req.Body == http.NoBody || req.GetBody != nil) {
		p.plain.Store(true)
		r := toPlain(req)
		if req.GetBody != nil {
			b, berr := req.GetBody()
			if berr != nil {
				return nil, err
			}
			r.Body = b
		}
		return p.base.RoundTrip(r)
	}
	return resp, err
}

func toPlain(req *http.Request) *http.Request {
	r := req.Clone(req.Context())
	r.URL.Scheme = "http"
	return r
}

func isPlainHTTPAnswer(err error) bool {
	var rh tls.RecordHeaderError
	return errors.As(err, &rh) || strings.Contains(err.Error(), "server gave HTTP response to HTTPS client")
}
