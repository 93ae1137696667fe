package oci

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/errdef"
	"oras.land/oras-go/v2/registry"
	"oras.land/oras-go/v2/registry/remote"

	"github.com/sysext/sysext/delta"
	"github.com/sysext/sysext/internal/ctxio"
	"github.com/sysext/sysext/internal/mediatype"
)

// The chunk index travels as an OCI 1.1 referrer of each per-architecture
// manifest (docs/format.md "Chunk index"): a manifest of this
// artifactType, the empty config, one layer of this media type (the
// index, package delta's format) and the image manifest as its subject.
// Registries without the referrers API list it under the sha256-<hex>
// fallback tag, as they list signatures. The tag, index, manifests and
// layer stay what they are, so every other consumer pulls the same image.
const (
	ArtifactTypeChunkIndex = "application/vnd.sysext.chunk-index.v1"
	MediaTypeChunkIndex    = "application/vnd.sysext.chunk-index.v1"
)

// AnnotationChunkIndexBlob names, on a chunk index manifest, its index
// blob's digest and size ("sha256:<hex> <size>"). Listed with the
// referrer (the referrers API and the fallback tag carry a manifest's
// annotations), it lets a node fetch the blob while it fetches the
// manifest; the blob is believed only once the manifest names the same.
const AnnotationChunkIndexBlob = "org.sysext.chunk-index.blob"

// ErrNoChunkIndex says no usable chunk index is attached to a manifest.
var ErrNoChunkIndex = errors.New("no chunk index is published for this image")

// maxChunkIndexCandidates bounds the chunk index referrers a node reads
// for one manifest (a re-published index adds one).
const maxChunkIndexCandidates = 4

// ChunkIndexFile cuts the image file at path into chunks and returns its
// chunk index, and encoded: the file is chunked and hashed (each chunk and
// the whole, so ix.Digest is the file's digest) in one pass of reading.
func ChunkIndexFile(ctx context.Context, path string) (*delta.Index, []byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, nil, err
	}
	ix, err := delta.BuildAt(ctxReaderAt{ctx, f}, fi.Size(), delta.Default)
	if err != nil {
		return nil, nil, fmt.Errorf("chunk index of %s: %w", path, err)
	}
	b, err := ix.MarshalBinary()
	if err != nil {
		return nil, nil, fmt.Errorf("chunk index of %s: %w", path, err)
	}
	return ix, b, nil
}

// ctxReaderAt fails reads once ctx is done.
type ctxReaderAt struct {
	ctx context.Context
	ra  io.ReaderAt
}

func (c ctxReaderAt) ReadAt(p []byte, off int64) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.ra.ReadAt(p, off)
}

// PushChunkIndex attaches the encoded chunk index to subject (a
// per-architecture manifest) in t and returns the referrer's descriptor.
// created is its org.opencontainers.image.created (the image's, so that
// pushing the same files again gives the same digests).
func PushChunkIndex(ctx context.Context, t oras.Target, subject ocispec.Descriptor, index []byte, created string) (ocispec.Descriptor, error) {
	blob := descriptorFor(MediaTypeChunkIndex, index)
	if err := pushIfMissing(ctx, t, blob, index); err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("chunk index of %s: %w", subject.Digest, err)
	}
	if err := pushIfMissing(ctx, t, ocispec.DescriptorEmptyJSON, ocispec.DescriptorEmptyJSON.Data); err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("chunk index of %s: empty config: %w", subject.Digest, err)
	}
	return pushChunkIndexManifest(ctx, t, subject, blob, created)
}

// pushChunkIndexManifest is PushChunkIndex once the index blob and the
// empty config are in t.
func pushChunkIndexManifest(ctx context.Context, t oras.Target, subject, blob ocispec.Descriptor, created string) (ocispec.Descriptor, error) {
	cfg := ocispec.DescriptorEmptyJSON
	cfg.Data = nil
	sub := ocispec.Descriptor{MediaType: subject.MediaType, Digest: subject.Digest, Size: subject.Size}
	m := ocispec.Manifest{
		Versioned:    specs.Versioned{SchemaVersion: 2},
		MediaType:    ocispec.MediaTypeImageManifest,
		ArtifactType: ArtifactTypeChunkIndex,
		Config:       cfg,
		Layers:       []ocispec.Descriptor{blob},
		Subject:      &sub,
		Annotations:  map[string]string{AnnotationCreated: created, AnnotationChunkIndexBlob: fmt.Sprintf("%s %d", blob.Digest, blob.Size)},
	}
	body, err := json.Marshal(m)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	desc := descriptorFor(ocispec.MediaTypeImageManifest, body)
	// Pushed even when present: a registry without the referrers API lists
	// it in the subject's fallback tag only on a push.
	if err := t.Push(ctx, desc, bytes.NewReader(body)); err != nil && !errors.Is(err, errdef.ErrAlreadyExists) {
		return ocispec.Descriptor{}, fmt.Errorf("chunk index of %s: manifest: %w", subject.Digest, err)
	}
	desc.ArtifactType = ArtifactTypeChunkIndex
	desc.Annotations = m.Annotations
	return desc, nil
}

// FindChunkIndex finds the chunk index attached to e's manifest in t and
// checks it before it is believed: the referrer manifest names the
// manifest as its subject and has one index layer of at most
// delta.MaxIndexSize bytes, the blob matches its digest, parses (package
// delta's checks) and is for e's layer (size and digest). It returns the
// index and how many bytes were read for it. ErrNoChunkIndex when none is
// attached.
func FindChunkIndex(ctx context.Context, t Target, e *Entry) (*delta.Index, int64, error) {
	return findChunkIndex(ctx, t, e.Descriptor, func(context.Context) (*Entry, error) { return e, nil })
}

// findChunkIndex is FindChunkIndex for the manifest subject names, whose
// entry (its layer: what the index must be for) entry waits for: the
// referrers are listed and the first candidate read before it is needed.
func findChunkIndex(ctx context.Context, t Target, subject ocispec.Descriptor, entry func(context.Context) (*Entry, error)) (*delta.Index, int64, error) {
	refs, stop, err := chunkIndexReferrers(ctx, t, subject)
	defer stop()
	if err != nil {
		return nil, 0, fmt.Errorf("chunk index of %s: list referrers: %w", subject.Digest, err)
	}
	if len(refs) == 0 {
		return nil, 0, fmt.Errorf("%s: %w", subject.Digest, ErrNoChunkIndex)
	}
	// The newest first: a publisher who re-publishes wants that one used.
	sort.SliceStable(refs, func(i, j int) bool {
		return refs[i].Annotations[AnnotationCreated] > refs[j].Annotations[AnnotationCreated]
	})
	var read int64
	var errs []error
	for i, r := range refs {
		if i == maxChunkIndexCandidates {
			break
		}
		ix, n, err := readChunkIndex(ctx, t, subject.Digest, entry, r)
		read += n
		if err == nil {
			return ix, read, nil
		}
		if ctx.Err() != nil || errors.Is(err, ErrOtherManifest) {
			return nil, read, err
		}
		errs = append(errs, err)
	}
	return nil, read, fmt.Errorf("chunk index of %s: %w", subject.Digest, errors.Join(errs...))
}

// ErrOtherManifest says a chunk index lookup started early
// (StartChunkIndex) was for another manifest than the one resolved: what
// it found is not used.
var ErrOtherManifest = errors.New("the lookup was started for another manifest")

// ChunkIndexLookup is a chunk index lookup started from a manifest's
// digest alone (StartChunkIndex), while the manifest itself is read: its
// round trips then overlap the manifest's. Nothing it finds is believed
// before Result is given the entry resolved and verified from that digest,
// and the index is then checked as FindChunkIndex checks it.
type ChunkIndexLookup struct {
	subject ocispec.Descriptor
	cancel  context.CancelFunc
	entry   chan *Entry // takes the entry once
	given   sync.Once
	done    chan struct{}
	ix      *delta.Index
	read    int64
	err     error
}

// StartChunkIndex starts looking for the chunk index attached to the
// manifest desc names (an image index's entry, before the manifest is
// read). The caller must call Result or Stop.
func StartChunkIndex(ctx context.Context, t Target, desc ocispec.Descriptor) *ChunkIndexLookup {
	ctx, cancel := context.WithCancel(ctx)
	l := &ChunkIndexLookup{subject: desc, cancel: cancel, entry: make(chan *Entry, 1), done: make(chan struct{})}
	go func() {
		defer close(l.done)
		l.ix, l.read, l.err = findChunkIndex(ctx, t, desc, func(ctx context.Context) (*Entry, error) {
			select {
			case e := <-l.entry:
				if e == nil || e.Descriptor.Digest != desc.Digest {
					return nil, ErrOtherManifest
				}
				return e, nil
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		})
	}()
	return l
}

// Result waits for the lookup and returns what FindChunkIndex(ctx, t, e)
// would: e must be the entry read and verified from the lookup's digest;
// for any other the lookup is stopped and its findings are not used (an
// error). The bytes read count either way.
func (l *ChunkIndexLookup) Result(ctx context.Context, e *Entry) (*delta.Index, int64, error) {
	if e.Descriptor.Digest != l.subject.Digest {
		l.Stop()
		return nil, l.read, fmt.Errorf("chunk index of %s: %w (%s)", e.Descriptor.Digest, ErrOtherManifest, l.subject.Digest)
	}
	l.give(e)
	select {
	case <-l.done:
	case <-ctx.Done():
		l.Stop()
		return nil, l.read, ctx.Err()
	}
	if l.err != nil {
		return nil, l.read, l.err
	}
	return l.ix, l.read, nil
}

// Stop cancels the lookup and waits for it to end; safe to call more than
// once, and after Result.
func (l *ChunkIndexLookup) Stop() {
	if l == nil {
		return
	}
	l.cancel()
	l.give(nil)
	<-l.done
}

func (l *ChunkIndexLookup) give(e *Entry) {
	l.given.Do(func() { l.entry <- e })
}

// chunkIndexReferrers lists the chunk index referrers of subject in t. A
// registry is asked both ways at once (docs/format.md "Chunk index"): the
// referrers API alone, and the sha256-<hex> fallback tag, so a registry
// without the API costs one round trip, not two (oras-go's Referrers asks
// the API, then the tag), and each request has a connection of its own
// for the reads that follow. The first answer that lists one wins; a
// failure counts only when the other found none. The loser may still be
// running: stop cancels it and waits for it, and is always to be called
// (the caller reads the referrers meanwhile).
func chunkIndexReferrers(ctx context.Context, t Target, subject ocispec.Descriptor) (refs []ocispec.Descriptor, stop func(), err error) {
	repo, ok := t.(*remote.Repository)
	if !ok {
		refs, err = listChunkIndexReferrers(ctx, t, subject)
		return refs, func() {}, err
	}
	// The API only: no fallback of its own.
	api := &remote.Repository{Client: repo.Client, Reference: repo.Reference, PlainHTTP: repo.PlainHTTP, MaxMetadataBytes: repo.MaxMetadataBytes, ReferrerListPageSize: repo.ReferrerListPageSize}
	if err := api.SetReferrersCapability(true); err != nil {
		return nil, func() {}, err
	}
	ctx, cancel := context.WithCancel(ctx)
	type answer struct {
		refs []ocispec.Descriptor
		err  error
	}
	answers := make(chan answer, 2)
	go func() {
		refs, err := listChunkIndexReferrers(ctx, api, subject)
		answers <- answer{refs, err}
	}()
	go func() {
		refs, err := chunkIndexReferrersByTag(ctx, repo, subject)
		if errors.Is(err, errdef.ErrNotFound) {
			err = nil
		}
		answers <- answer{refs, err}
	}()
	pending := 2
	stop = func() {
		cancel()
		for ; pending > 0; pending-- {
			<-answers
		}
	}
	for pending > 0 {
		a := <-answers
		pending--
		if len(a.refs) > 0 && a.err == nil {
			return a.refs, stop, nil
		}
		err = cmp.Or(err, a.err)
	}
	return nil, stop, err
}

// listChunkIndexReferrers lists subject's chunk index referrers with t's
// Referrers (the API or, where it has none, the fallback tag).
func listChunkIndexReferrers(ctx context.Context, t registry.ReferrerLister, subject ocispec.Descriptor) ([]ocispec.Descriptor, error) {
	var refs []ocispec.Descriptor
	err := t.Referrers(ctx, subject, ArtifactTypeChunkIndex, func(rs []ocispec.Descriptor) error {
		refs = appendChunkIndexRefs(refs, rs)
		if len(refs) > 16*maxChunkIndexCandidates {
			return errors.New("too many referrers")
		}
		return nil
	})
	if err != nil && !errors.Is(err, errdef.ErrNotFound) && !errors.Is(err, errdef.ErrUnsupported) {
		return nil, err
	}
	return refs, nil
}

// chunkIndexReferrersByTag reads subject's referrers from the fallback tag
// (sha256-<hex>, an index of them) alone.
func chunkIndexReferrersByTag(ctx context.Context, repo *remote.Repository, subject ocispec.Descriptor) ([]ocispec.Descriptor, error) {
	desc, rc, err := repo.FetchReference(ctx, CosignTag(subject, ""))
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	if !mediatype.IsIndex(desc.MediaType) || desc.Size > MaxManifestSize {
		return nil, fmt.Errorf("referrers tag of %s: %s of %d bytes is not an index", subject.Digest, desc.MediaType, desc.Size)
	}
	b, err := io.ReadAll(io.LimitReader(rc, MaxManifestSize+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) != desc.Size || digest.FromBytes(b) != desc.Digest {
		return nil, fmt.Errorf("referrers tag of %s: the bytes received do not match %s", subject.Digest, desc.Digest)
	}
	var idx ocispec.Index
	if err := json.Unmarshal(b, &idx); err != nil {
		return nil, fmt.Errorf("referrers tag of %s: %w", subject.Digest, err)
	}
	if len(idx.Manifests) > MaxIndexEntries*16*maxChunkIndexCandidates {
		return nil, errors.New("too many referrers")
	}
	return appendChunkIndexRefs(nil, idx.Manifests), nil
}

// appendChunkIndexRefs appends the chunk index manifests of rs to refs:
// stores that cannot filter by type list everything.
func appendChunkIndexRefs(refs, rs []ocispec.Descriptor) []ocispec.Descriptor {
	for _, r := range rs {
		if r.ArtifactType == ArtifactTypeChunkIndex && mediatype.IsManifest(r.MediaType) {
			refs = append(refs, r)
		}
	}
	return refs
}

// readChunkIndex reads and checks one chunk index referrer: the index blob
// is the one its manifest names, whatever the listing said.
func readChunkIndex(ctx context.Context, t Target, subject digest.Digest, entry func(context.Context) (*Entry, error), r ocispec.Descriptor) (*delta.Index, int64, error) {
	// The blob the listing names is fetched beside the manifest.
	ctx, cancel := context.WithCancel(ctx)
	early := make(chan fetchedBlob, 1)
	var got *fetchedBlob
	wait := func() fetchedBlob {
		if got == nil {
			fb := <-early
			got = &fb
		}
		return *got
	}
	defer func() { cancel(); wait() }()
	named, ok := listedBlob(r)
	if ok {
		go func() {
			b, err := content.FetchAll(ctx, t, named)
			early <- fetchedBlob{b, err}
		}()
	} else {
		early <- fetchedBlob{err: errors.New("not listed")}
	}
	body, err := FetchManifest(ctx, t, r)
	if err != nil {
		return nil, 0, err
	}
	read := int64(len(body))
	var m ocispec.Manifest
	if err := json.Unmarshal(body, &m); err != nil {
		return nil, read, fmt.Errorf("referrer %s: %w: %v", r.Digest, delta.ErrInvalid, err)
	}
	switch {
	case m.ArtifactType != ArtifactTypeChunkIndex:
		return nil, read, fmt.Errorf("referrer %s: artifactType %q: %w", r.Digest, m.ArtifactType, delta.ErrInvalid)
	case m.Subject == nil || m.Subject.Digest != subject:
		return nil, read, fmt.Errorf("referrer %s: its subject is not %s: %w", r.Digest, subject, delta.ErrInvalid)
	case len(m.Layers) != 1 || m.Layers[0].MediaType != MediaTypeChunkIndex:
		return nil, read, fmt.Errorf("referrer %s: want one layer of %s: %w", r.Digest, MediaTypeChunkIndex, delta.ErrInvalid)
	case m.Layers[0].Size > delta.MaxIndexSize || m.Layers[0].Size < 0:
		return nil, read, fmt.Errorf("referrer %s: the index has %d bytes, more than %d: %w", r.Digest, m.Layers[0].Size, delta.MaxIndexSize, delta.ErrInvalid)
	}
	if err := m.Layers[0].Digest.Validate(); err != nil {
		return nil, read, fmt.Errorf("referrer %s: %w: %v", r.Digest, delta.ErrInvalid, err)
	}
	fb := wait()
	read += int64(len(fb.b))
	b, err := fb.b, fb.err
	if !ok || err != nil || named.Digest != m.Layers[0].Digest || named.Size != m.Layers[0].Size {
		b, err = content.FetchAll(ctx, t, m.Layers[0]) // size and digest checked
		read += int64(len(b))
	}
	if err != nil {
		return nil, read, fmt.Errorf("referrer %s: index blob: %w", r.Digest, err)
	}
	ix, err := delta.Parse(b)
	if err != nil {
		return nil, read, fmt.Errorf("referrer %s: %w", r.Digest, err)
	}
	// The layer it must be for is known once the manifest is read and
	// verified (an early lookup waits here for it).
	e, err := entry(ctx)
	if err != nil {
		return nil, read, err
	}
	if err := ix.Check(e.Layer.Size, e.Layer.Digest.String()); err != nil {
		return nil, read, fmt.Errorf("referrer %s: %w", r.Digest, err)
	}
	return ix, read, nil
}

type fetchedBlob struct {
	b   []byte
	err error
}

// listedBlob is the index blob a listed referrer r names in its
// annotations (AnnotationChunkIndexBlob), when it names one that may be
// read.
func listedBlob(r ocispec.Descriptor) (ocispec.Descriptor, bool) {
	var d string
	var n int64
	if _, err := fmt.Sscanf(r.Annotations[AnnotationChunkIndexBlob], "%s %d", &d, &n); err != nil {
		return ocispec.Descriptor{}, false
	}
	desc := ocispec.Descriptor{MediaType: MediaTypeChunkIndex, Digest: digest.Digest(d), Size: n}
	if desc.Digest.Validate() != nil || desc.Digest.Algorithm() != digest.SHA256 || n < 0 || n > delta.MaxIndexSize {
		return ocispec.Descriptor{}, false
	}
	return desc, true
}

// AttachedChunkIndex says what AttachChunkIndexes did for one manifest.
type AttachedChunkIndex struct {
	Entry Entry
	// Referrer is the chunk index attached now, or found already.
	Referrer ocispec.Descriptor
	Chunks   int
	// Existed: a valid chunk index was attached already; nothing pushed.
	Existed bool
}

// AttachChunkIndexes gives every manifest ref points to (every
// architecture) the chunk index push would have attached, for artifacts
// pushed without one (before sysext published them, or by another tool):
// each layer is read from t once, streaming, cut and hashed, and checked
// against its digest before its index is pushed. The tag, index,
// manifests and their signatures stay as they are. A manifest with a valid
// chunk index already is left alone.
func AttachChunkIndexes(ctx context.Context, t Target, ref Reference) ([]AttachedChunkIndex, error) {
	a, err := Describe(ctx, t, ref)
	if err != nil {
		return nil, err
	}
	var out []AttachedChunkIndex
	for _, e := range a.Entries {
		r := AttachedChunkIndex{Entry: e}
		if ix, _, err := FindChunkIndex(ctx, t, &e); err == nil {
			r.Existed, r.Chunks = true, len(ix.Chunks)
			out = append(out, r)
			continue
		}
		b, n, err := chunkIndexOfLayer(ctx, t, e.Layer)
		if err != nil {
			return out, Explain(ref, fmt.Errorf("%s: %w", ref, err))
		}
		// The image's own time, so that attaching twice gives one referrer.
		created := e.Manifest.Annotations[AnnotationCreated]
		if created == "" {
			if created, err = createdTime(time.Time{}); err != nil {
				return out, err
			}
		}
		if r.Referrer, err = PushChunkIndex(ctx, t, e.Descriptor, b, created); err != nil {
			return out, Explain(ref, fmt.Errorf("%s: %w", ref, err))
		}
		r.Chunks = n
		out = append(out, r)
	}
	return out, nil
}

// chunkIndexOfLayer streams layer from t through the chunker and returns
// its encoded index and chunk count, refusing bytes that are not the
// layer's.
func chunkIndexOfLayer(ctx context.Context, t Target, layer ocispec.Descriptor) ([]byte, int, error) {
	if err := layer.Digest.Validate(); err != nil {
		return nil, 0, fmt.Errorf("layer digest %q: %w", layer.Digest, err)
	}
	rc, err := t.Fetch(ctx, layer)
	if err != nil {
		return nil, 0, fmt.Errorf("layer %s: %w", layer.Digest, err)
	}
	defer rc.Close()
	ix, err := delta.Build(ctxio.Reader(ctx, io.LimitReader(rc, layer.Size+1)), delta.Default)
	if err != nil {
		return nil, 0, fmt.Errorf("layer %s: %w", layer.Digest, err)
	}
	if ix.Size != layer.Size {
		return nil, 0, sizeMismatch(layer)
	}
	if got := ix.DigestString(); got != layer.Digest.String() {
		return nil, 0, fmt.Errorf("layer %s: the bytes received do not match the digest (got %s)", layer.Digest, got)
	}
	b, err := ix.MarshalBinary()
	if err != nil {
		return nil, 0, fmt.Errorf("layer %s: %w", layer.Digest, err)
	}
	return b, len(ix.Chunks), nil
}
