package oci

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2"
	"oras.land/oras-go/v2/errdef"
	"oras.land/oras-go/v2/registry"
	"oras.land/oras-go/v2/registry/remote"

	"github.com/sysext/sysext/delta"
	"github.com/sysext/sysext/extension"
	"github.com/sysext/sysext/fsimage"
	"github.com/sysext/sysext/internal/mediatype"
	"github.com/sysext/sysext/internal/testhook"
)

// PushOptions tune Push. The zero value pushes a new index.
type PushOptions struct {
	// Append keeps the architectures of the index already at the tag that
	// the pushed files do not replace (per-architecture CI jobs publishing
	// to one tag). A missing tag is fine.
	Append bool
	// Annotations are added to every manifest and to the index; our own
	// keys (AnnotationPrefix) may not be overridden.
	Annotations map[string]string
	// Source sets org.opencontainers.image.source.
	Source string
	// Created sets org.opencontainers.image.created. Zero means
	// $SOURCE_DATE_EPOCH when set (reproducible digests), else now.
	Created time.Time
	// Progress, when set, is told about each file's upload.
	Progress func(file string, done, total int64)
	// Replacing, when set, is called with Append when the tag already
	// points at an index (or a manifest), with it and the manifests it
	// lists, before anything is uploaded; an error stops the push. The
	// caller checks there what replacing it would lose (its signatures).
	Replacing func(ctx context.Context, old ocispec.Descriptor, entries []ocispec.Descriptor) error
	// NoChunkIndex leaves out the chunk index that Push attaches to each
	// manifest by default (docs/format.md "Chunk index"): nodes then
	// always download the whole image.
	NoChunkIndex bool
}

// PushedManifest is one architecture's manifest Push wrote.
type PushedManifest struct {
	File       string
	Descriptor ocispec.Descriptor // with Platform set (nil for _any)
	Layer      ocispec.Descriptor
	Metadata   extension.Metadata
	// ChunkIndex is the chunk index referrer attached to the manifest
	// (zero with NoChunkIndex).
	ChunkIndex ocispec.Descriptor
}

// PushResult is what Push wrote.
type PushResult struct {
	Ref       Reference
	Index     ocispec.Descriptor   // the tagged index
	Manifests []PushedManifest     // the ones this push wrote, in file order
	Kept      []ocispec.Descriptor // entries kept from the old index (Append)
}

// Push reads each image's metadata (refusing a file whose metadata is
// broken), uploads each file as the one layer of a per-architecture
// manifest with our artifactType and annotations, and tags an index over
// them at ref.Tag. Every file must be the same extension; two files for
// one architecture are an error. Blobs already present are not uploaded
// again.
func Push(ctx context.Context, t oras.Target, ref Reference, files []string, opts PushOptions) (*PushResult, error) {
	if len(files) == 0 {
		return nil, errors.New("push: no image files given")
	}
	if ref.Tag == "" || ref.Digest != "" {
		return nil, fmt.Errorf("push %s: give a tag to push to (host/repo:tag or oci:DIR:tag), not a digest", ref)
	}
	for k := range opts.Annotations {
		if len(k) >= len(AnnotationPrefix) && k[:len(AnnotationPrefix)] == AnnotationPrefix {
			return nil, fmt.Errorf("push: annotation %s: the %s keys are taken from the image's extension-release, not set by hand", k, AnnotationPrefix)
		}
	}
	created, err := createdTime(opts.Created)
	if err != nil {
		return nil, err
	}
	// Read and check every file before uploading anything.
	infos := make([]*fsimage.Info, len(files))
	states := make([]fileState, len(files))
	seen := map[string]string{}
	for i, f := range files {
		// What the file is before anything is read from it: a push that
		// finds it different later refuses to publish it.
		st, err := statFile(f)
		if err != nil {
			return nil, fmt.Errorf("push %s: %w", f, err)
		}
		states[i] = st
		info, err := openPushable(ctx, f, opts.NoChunkIndex)
		if err != nil {
			return nil, fmt.Errorf("push %s: %w", f, err)
		}
		if err := checkPushable(f, info); err != nil {
			return nil, err
		}
		if i > 0 && info.Name != infos[0].Name {
			return nil, fmt.Errorf("push: %s is extension %q but %s is %q: push each extension to its own tag", f, info.Name, files[0], infos[0].Name)
		}
		p := PlatformString(Platform(info.Meta.Arch))
		if other, dup := seen[p]; dup {
			return nil, fmt.Errorf("push: %s and %s are both for %s: give one file per architecture", other, f, p)
		}
		seen[p] = f
		infos[i] = info
	}
	res := &PushResult{Ref: ref}
	if opts.Append {
		old, all, err := readAppendIndex(ctx, t, ref)
		if err != nil {
			return nil, err
		}
		if old.Digest != "" && opts.Replacing != nil {
			if err := opts.Replacing(ctx, old, all); err != nil {
				return nil, err
			}
		}
		for _, d := range all {
			if _, ok := seen[PlatformString(d.Platform)]; !ok {
				res.Kept = append(res.Kept, d)
			}
		}
	}
	for i, info := range infos {
		pm, err := pushFile(ctx, t, ref, files[i], info, states[i], created, opts)
		if err != nil {
			return nil, err
		}
		res.Manifests = append(res.Manifests, *pm)
	}
	var entries []ocispec.Descriptor
	for _, pm := range res.Manifests {
		entries = append(entries, pm.Descriptor)
	}
	entries = append(entries, res.Kept...)
	sort.SliceStable(entries, func(i, j int) bool {
		return PlatformString(entries[i].Platform) < PlatformString(entries[j].Platform)
	})
	ann := map[string]string{AnnotationCreated: created}
	if opts.Source != "" {
		ann[AnnotationSource] = opts.Source
	}
	for k, v := range opts.Annotations {
		ann[k] = v
	}
	idx := ocispec.Index{
		Versioned:    specs.Versioned{SchemaVersion: 2},
		MediaType:    ocispec.MediaTypeImageIndex,
		ArtifactType: ArtifactType,
		Manifests:    entries,
		Annotations:  ann,
	}
	body, err := json.Marshal(idx)
	if err != nil {
		return nil, err
	}
	desc := descriptorFor(ocispec.MediaTypeImageIndex, body)
	desc.ArtifactType = ArtifactType
	if err := pushTagged(ctx, t, desc, body, ref.Tag); err != nil {
		return nil, Explain(ref, fmt.Errorf("push %s: %w", ref, err))
	}
	res.Index = desc
	return res, nil
}

func checkPushable(path string, info *fsimage.Info) error {
	if d := info.DDI; d != nil {
		if d.Hash() == nil {
			return fmt.Errorf("push %s: a disk image without a dm-verity partition: nothing would protect it at rest; build it with 'sysext build --format ddi'", path)
		}
		if d.SignaturePartition() != nil {
			if err := selfSigned(d); err != nil {
				return fmt.Errorf("push %s: %w: refusing to publish it", path, err)
			}
		}
	}
	if info.Name == "" || info.Release == nil {
		return fmt.Errorf("push %s: the image has no usr/lib/extension-release.d/extension-release.NAME", path)
	}
	if err := info.Meta.Validate(); err != nil {
		return fmt.Errorf("push %s: extension-release.%s: %w", path, info.Name, err)
	}
	if info.Meta.Arch != "" && !info.Meta.Arch.Valid() {
		return fmt.Errorf("push %s: ARCHITECTURE=%s is not a systemd architecture", path, info.Meta.Arch)
	}
	return nil
}

// createdTime is opts.Created, else $SOURCE_DATE_EPOCH, else now, in RFC 3339.
func createdTime(t time.Time) (string, error) {
	if t.IsZero() {
		if s := os.Getenv("SOURCE_DATE_EPOCH"); s != "" {
			n, err := strconv.ParseInt(s, 10, 64)
			if err != nil {
				return "", fmt.Errorf("SOURCE_DATE_EPOCH=%q is not a number of seconds", s)
			}
			t = time.Unix(n, 0)
		} else {
			t = time.Now()
		}
	}
	return t.UTC().Format(time.RFC3339), nil
}

// pushFile uploads one file and its manifest and, unless NoChunkIndex,
// attaches its chunk index. The file is hashed as the chunk index is made
// (delta.BuildAtNotify: the digest on one core, the chunks on the other).
// To a registry the file goes up at once, while it is hashed
// (earlyUpload); elsewhere the upload starts as soon as the digest is
// known, while the chunks are still being cut.
func pushFile(ctx context.Context, t oras.Target, ref Reference, path string, info *fsimage.Info, st fileState, created string, opts PushOptions) (*PushedManifest, error) {
	if hook := testhook.PushFile; hook != nil {
		hook("read", path)
	}
	pm, err := pushFileOnce(ctx, t, ref, path, info, st, created, opts)
	if err != nil && (refusedBytes(err) || st.check(path) != nil) {
		// Whatever failed on the way, a file that is not what was read
		// and hashed is the reason to say.
		return nil, fmt.Errorf("push %s: %w", path, errFileChanged)
	}
	return pm, err
}

func pushFileOnce(ctx context.Context, t oras.Target, ref Reference, path string, info *fsimage.Info, st fileState, created string, opts PushOptions) (*PushedManifest, error) {
	repo, _ := t.(*remote.Repository)
	if opts.NoChunkIndex {
		// Hashed already (openPushable). To a registry, through an
		// upload session of our own, which a failure deletes.
		var early *earlyUpload
		if repo != nil {
			early = startEarlyUpload(ctx, repo, path, info.Size, st, opts.Progress)
			defer early.abort(ctx)
		}
		pm, err := pushOne(ctx, t, ref, path, info, st, created, opts, early)
		if err != nil {
			return nil, Explain(ref, err)
		}
		return pm, nil
	}
	outer := ctx
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ci := startChunkIndex(ctx, path, info.Size)
	// On failure the reads stop (cancel) and end before the file is left.
	defer ci.wait()
	defer cancel()
	// A registry gets the file at once, while it is hashed (earlyUpload).
	var early *earlyUpload
	if repo != nil {
		early = startEarlyUpload(ctx, repo, path, info.Size, st, opts.Progress)
		// Whatever fails, the upload session is not left open.
		defer early.abort(ctx)
	}
	dg, err := ci.digest()
	if err != nil {
		return nil, fmt.Errorf("push %s: %w", path, err)
	}
	info.Digest = dg
	// The chunk index blob goes up as soon as it is made, while the layer
	// still uploads; with it and the config there (pushOne), only its
	// manifest is left. A chunk index that cannot be made stops the
	// upload. A failed layer does not stop the blob's push midway (outer):
	// that would leave its upload session open; it is small.
	blob := make(chan error, 1)
	var chunkErr error // set before blob is sent to
	go func() {
		index, err := ci.wait()
		if err != nil {
			if ctx.Err() == nil {
				chunkErr = err
				cancel()
			}
			blob <- err
			return
		}
		blob <- pushIfMissing(outer, t, descriptorFor(MediaTypeChunkIndex, index), index)
	}()
	pm, err := pushOne(ctx, t, ref, path, info, st, created, opts, early)
	if err != nil {
		cancel()
	}
	berr := <-blob
	switch {
	case chunkErr != nil:
		return nil, fmt.Errorf("push %s: %w", path, chunkErr)
	case err != nil:
		return nil, Explain(ref, err)
	case berr != nil:
		return nil, Explain(ref, fmt.Errorf("push %s: chunk index: %w", path, berr))
	}
	index, _ := ci.wait()
	if pm.ChunkIndex, err = pushChunkIndexManifest(ctx, t, pm.Descriptor, descriptorFor(MediaTypeChunkIndex, index), created); err != nil {
		return nil, Explain(ref, fmt.Errorf("push %s: %w", path, err))
	}
	return pm, nil
}

// chunkIndexing is a file's chunk index being made; its digest is known
// first.
type chunkIndexing struct {
	path  string
	sum   chan [sha256.Size]byte // the whole file's SHA-256, once known
	done  chan struct{}
	index []byte
	err   error
}

// startChunkIndex starts making the chunk index of the file at path,
// which must be size bytes long (what its metadata was read from).
func startChunkIndex(ctx context.Context, path string, size int64) *chunkIndexing {
	ci := &chunkIndexing{path: path, sum: make(chan [sha256.Size]byte, 1), done: make(chan struct{})}
	go func() {
		defer close(ci.done)
		f, err := os.Open(path)
		if err != nil {
			ci.err = err
			return
		}
		defer f.Close()
		if fi, err := f.Stat(); err != nil {
			ci.err = err
			return
		} else if fi.Size() != size {
			ci.err = fmt.Errorf("%w (%d, then %d bytes)", errFileChanged, size, fi.Size())
			return
		}
		ix, err := delta.BuildAtNotify(ctxReaderAt{ctx, f}, size, delta.Default, func(s [sha256.Size]byte) { ci.sum <- s })
		if err == nil {
			ci.index, err = ix.MarshalBinary()
		}
		if err != nil {
			ci.err = fmt.Errorf("chunk index of %s: %w", path, err)
		}
	}()
	return ci
}

// digest waits for the file's digest (or the failure to read it).
func (ci *chunkIndexing) digest() (string, error) {
	select {
	case s := <-ci.sum:
		return "sha256:" + hex.EncodeToString(s[:]), nil
	case <-ci.done:
		select {
		case s := <-ci.sum: // known just before the chunks failed
			return "sha256:" + hex.EncodeToString(s[:]), nil
		default:
		}
		if ci.err == nil {
			return "", fmt.Errorf("chunk index of %s: no digest", ci.path)
		}
		return "", ci.err
	}
}

// wait waits until the chunk index is made and returns it encoded.
func (ci *chunkIndexing) wait() ([]byte, error) {
	<-ci.done
	return ci.index, ci.err
}

// pushOne uploads the file (through early when it is already on its way)
// and its manifest.
func pushOne(ctx context.Context, t oras.Target, ref Reference, path string, info *fsimage.Info, st fileState, created string, opts PushOptions, early *earlyUpload) (*PushedManifest, error) {
	if hook := testhook.PushFile; hook != nil {
		hook("hashed", path)
	}
	mt, err := LayerMediaType(string(info.Format))
	if err != nil {
		return nil, fmt.Errorf("push %s: %w", path, err)
	}
	dg, err := digest.Parse(info.Digest)
	if err != nil {
		return nil, fmt.Errorf("push %s: digest %q: %w", path, info.Digest, err)
	}
	title := filepath.Base(path)
	if info.Meta.Version != "" && info.Meta.Arch != "" {
		title = extension.FileName(info.Meta.Name, info.Meta.Version, info.Meta.Arch)
	}
	layer := ocispec.Descriptor{
		MediaType:   mt,
		Digest:      dg,
		Size:        info.Size,
		Annotations: map[string]string{AnnotationTitle: title},
	}
	// The empty config goes up beside the layer, not after it: its
	// round trips then cost nothing.
	config := make(chan error, 1)
	go func() {
		config <- pushIfMissing(ctx, t, ocispec.DescriptorEmptyJSON, ocispec.DescriptorEmptyJSON.Data)
	}()
	if early != nil {
		err = early.finish(ctx, layer)
	} else {
		err = uploadFile(ctx, t, path, layer, st, opts.Progress)
	}
	cerr := <-config
	if err == nil {
		// Nothing names the layer yet: a file that changed since it was
		// read (which its digest cannot tell when that was before it was
		// hashed) stops here.
		err = st.check(path)
	}
	if err != nil {
		return nil, fmt.Errorf("push %s: %w", path, err)
	}
	if cerr != nil {
		return nil, fmt.Errorf("push %s: empty config: %w", path, cerr)
	}
	ann := Annotations(info.Meta)
	for k, v := range ImageAnnotations(info.Release) {
		ann[k] = v
	}
	ann[AnnotationFormat] = string(info.Format)
	if info.Format == fsimage.EROFS {
		ann[AnnotationCompression] = cmp.Or(strings.Join(info.Compression, " "), "none")
	}
	for k, v := range VerityAnnotations(info.DDI) {
		ann[k] = v
	}
	ann[AnnotationCreated] = created
	if opts.Source != "" {
		ann[AnnotationSource] = opts.Source
	}
	for k, v := range opts.Annotations {
		ann[k] = v
	}
	cfg := ocispec.DescriptorEmptyJSON
	cfg.Data = nil
	m := ocispec.Manifest{
		Versioned:    specs.Versioned{SchemaVersion: 2},
		MediaType:    ocispec.MediaTypeImageManifest,
		ArtifactType: ArtifactType,
		Config:       cfg,
		Layers:       []ocispec.Descriptor{layer},
		Annotations:  ann,
	}
	body, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	desc := descriptorFor(ocispec.MediaTypeImageManifest, body)
	if err := pushIfMissing(ctx, t, desc, body); err != nil {
		return nil, fmt.Errorf("push %s: manifest: %w", path, err)
	}
	desc.ArtifactType = ArtifactType
	desc.Platform = Platform(info.Meta.Arch)
	return &PushedManifest{File: path, Descriptor: desc, Layer: layer, Metadata: info.Meta}, nil
}

// pushTagged stores the manifest body under desc and points tag at it:
// in one PUT by tag where the store takes that (a registry), else pushed
// (unless present) and then tagged, which on a registry costs a HEAD, the
// PUT, a GET and a second PUT.
func pushTagged(ctx context.Context, t oras.Target, desc ocispec.Descriptor, body []byte, tag string) error {
	if rp, ok := t.(registry.ReferencePusher); ok {
		if err := rp.PushReference(ctx, desc, bytes.NewReader(body), tag); err != nil {
			return fmt.Errorf("index: %w", err)
		}
		return nil
	}
	if err := pushIfMissing(ctx, t, desc, body); err != nil {
		return fmt.Errorf("index: %w", err)
	}
	if err := t.Tag(ctx, desc, tag); err != nil {
		return fmt.Errorf("tag: %w", err)
	}
	return nil
}

func descriptorFor(mediaType string, body []byte) ocispec.Descriptor {
	return ocispec.Descriptor{MediaType: mediaType, Digest: digest.FromBytes(body), Size: int64(len(body))}
}

func pushIfMissing(ctx context.Context, t oras.Target, desc ocispec.Descriptor, body []byte) error {
	if ok, err := t.Exists(ctx, desc); err == nil && ok {
		return nil
	}
	err := t.Push(ctx, desc, bytes.NewReader(body))
	if errors.Is(err, errdef.ErrAlreadyExists) {
		return nil
	}
	return err
}

// uploadFile streams the file as blob desc unless the store has it.
func uploadFile(ctx context.Context, t oras.Target, path string, desc ocispec.Descriptor, st fileState, progress func(string, int64, int64)) error {
	if ok, err := t.Exists(ctx, desc); err == nil && ok {
		if progress != nil {
			progress(path, desc.Size, desc.Size)
		}
		return nil
	}
	if hook := testhook.PushFile; hook != nil {
		hook("send", path)
	}
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := st.checkOpen(f); err != nil {
		return err
	}
	stop := func() {}
	if progress != nil {
		stop = watchOffset(f, path, desc.Size, progress)
	}
	// The file itself is the body, so that net/http sends it with
	// sendfile(2): the kernel copies the page cache into the socket, and
	// this process does not read and write every byte (Progress is read
	// from the file's offset, which sendfile moves).
	err = t.Push(ctx, desc, f)
	stop()
	if progress != nil && (err == nil || errors.Is(err, errdef.ErrAlreadyExists)) {
		progress(path, desc.Size, desc.Size)
	}
	if errors.Is(err, errdef.ErrAlreadyExists) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("upload %s: %w", desc.Digest, err)
	}
	return nil
}

// watchOffset tells progress, every progressEvery until the returned stop
// is called, how far f's offset has come (the upload reads f from the
// start).
func watchOffset(f *os.File, path string, total int64, progress func(string, int64, int64)) (stop func()) {
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		tick := time.NewTicker(progressEvery)
		defer tick.Stop()
		last := int64(-1)
		for {
			select {
			case <-done:
				return
			case <-tick.C:
			}
			// A closed file (the transport closes the body it sent)
			// ends the watch.
			off, err := f.Seek(0, io.SeekCurrent)
			if err != nil {
				return
			}
			if off != last {
				progress(path, off, total)
				last = off
			}
		}
	}()
	return func() {
		close(done)
		<-finished
	}
}

// progressEvery is how often an upload's progress is looked at.
const progressEvery = 100 * time.Millisecond

// readAppendIndex returns what the tag of ref points at (a zero
// descriptor when nothing does) and its entries: the index's manifests, or
// the one manifest under the platform its annotations say.
func readAppendIndex(ctx context.Context, t oras.Target, ref Reference) (ocispec.Descriptor, []ocispec.Descriptor, error) {
	root, body, err := fetchRoot(ctx, t, ref)
	if errors.Is(err, ErrNotFound) {
		return ocispec.Descriptor{}, nil, nil
	}
	if err != nil {
		return root, nil, fmt.Errorf("push --append: read the index at %s: %w", ref, err)
	}
	var entries []ocispec.Descriptor
	if mediatype.IsIndex(root.MediaType) {
		var idx ocispec.Index
		if err := json.Unmarshal(body, &idx); err != nil {
			return root, nil, fmt.Errorf("push --append: index at %s: %w", ref, err)
		}
		entries = idx.Manifests
	} else {
		// A single manifest: keep it under the platform its annotations say.
		e, err := parseEntry(ref, root, body, nil)
		if err != nil {
			return root, nil, fmt.Errorf("push --append: the manifest at %s: %w", ref, err)
		}
		m := root
		m.Platform = Platform(e.Metadata.Arch)
		entries = []ocispec.Descriptor{m}
	}
	return root, entries, nil
}

// selfSigned checks that a disk image's signature partition signs its root
// hash with the certificate it carries: what the publisher meant. Trust in
// that certificate is the node's decision.
func selfSigned(d *fsimage.DDI) error {
	if d.SignatureErr != nil {
		return d.SignatureErr
	}
	c := d.Signature.EmbeddedSigner()
	if c == nil {
		return errors.New("the signature partition carries no certificate, so the manifest cannot name the signer")
	}
	root, err := hex.DecodeString(d.RootHash)
	if err != nil {
		return err
	}
	if _, err := d.Signature.Check(root, []*x509.Certificate{c}); err != nil {
		return err
	}
	return nil
}
