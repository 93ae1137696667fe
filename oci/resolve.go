package oci

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/errdef"
	"oras.land/oras-go/v2/registry"

	"github.com/sysext/sysext/extension"
	"github.com/sysext/sysext/internal/blob"
	"github.com/sysext/sysext/internal/mediatype"
)

// Errors callers may test for with errors.Is.
var (
	// ErrNotFound: the tag, digest or blob is not in the store (it wraps
	// oras-go's errdef.ErrNotFound too).
	ErrNotFound = errdef.ErrNotFound
	// ErrNoPlatform: the artifact has no build for the requested
	// architecture. The error text lists the ones it has.
	ErrNoPlatform = errors.New("no build for this platform")
	// ErrNotExtension: the artifact is not something we can treat as an
	// extension image (several layers, a manifest too large, bad
	// annotations, ...).
	ErrNotExtension = errors.New("not a sysext artifact")
)

// Entry is one architecture's manifest of an artifact, read from the
// manifest alone (nothing of the image is downloaded).
type Entry struct {
	// Platform is the index entry's platform; nil for a single manifest or
	// an entry without one (ARCHITECTURE=_any).
	Platform *ocispec.Platform
	// Descriptor is the manifest's descriptor (its digest is what
	// signatures are made on).
	Descriptor ocispec.Descriptor
	// Manifest is the parsed manifest.
	Manifest *ocispec.Manifest
	// Layer is the one layer: the image file.
	Layer ocispec.Descriptor
	// Kind says whose convention the manifest follows.
	Kind Kind
	// Metadata is decoded from the annotations; only for KindSysext.
	Metadata extension.Metadata
	// FileName is the safe single-component file name to store the image
	// under: NAME-VERSION-ARCH.raw for our format, else the title
	// annotation, else "<hex>.raw".
	FileName string
}

// Resolved is what a node needs to fetch one extension: the root the
// reference points to and the entry chosen for one architecture.
type Resolved struct {
	Ref   Reference          // the reference as given
	Root  ocispec.Descriptor // what the tag (or digest) points to: an index or a manifest
	Index *ocispec.Index     // nil when Root is a single manifest
	Entry                    // the chosen architecture's manifest
}

// Artifact is every entry of a reference, for inspect and copy.
type Artifact struct {
	Ref     Reference
	Root    ocispec.Descriptor
	Index   *ocispec.Index // nil when Root is a single manifest
	Entries []Entry
	// Skipped lists index entries that are not usable extension manifests
	// (attestations, nested indexes, broken manifests) with the reason.
	Skipped []string
}

// Bounds on what an index can make a reader fetch. An extension artifact
// has one manifest per architecture (plus perhaps attestations); a crafted
// index of 20 000 entries (3 MB, under MaxManifestSize) must not cost
// 20 000 requests and gigabytes before any signature is checked.
const (
	// MaxIndexEntries is the most manifests an index may list, and
	// MaxIndexSize the most bytes it may have (a real one has a few KiB):
	// a larger index is refused from its descriptor, before it is read.
	MaxIndexEntries = 256
	MaxIndexSize    = 1 << 20
	// MaxCandidates is how many distinct manifests Resolve reads to find
	// an architecture's build in an index whose signature verified;
	// maxUnverifiedCandidates in one that did not (or when nothing was
	// asked to verify it).
	MaxCandidates           = 64
	maxUnverifiedCandidates = 4
	// MaxDescribeBytes bounds the manifest bytes Describe reads in all.
	MaxDescribeBytes = 64 << 20
)

// ResolveOptions tune ResolveWith.
type ResolveOptions struct {
	// VerifyIndex, when set, is asked about an index before Resolve reads
	// more than maxUnverifiedCandidates of its manifests: nil means its
	// signature verified, and up to MaxCandidates are read. A node passes
	// its trust policy, so an unsigned index costs a few requests at most.
	VerifyIndex func(ctx context.Context, index ocispec.Descriptor) error
	// Root, when its digest is set, is what ref was resolved to already
	// (update compares the tag's digest first): the tag is not asked
	// again, so both see the same artifact even if the tag moves between.
	Root ocispec.Descriptor
	// RootBody, with Root, is Root's bytes when the caller has them
	// (FetchRoot's or CheckTag's answer): checked against Root's digest
	// and used instead of asking.
	RootBody []byte
	// Reading, when set, is told the resolution so far as the read of the
	// first manifest an index lists for arch starts (not for a single
	// manifest): Ref, Root, Index, and of the Entry only the index's
	// descriptor and platform. Lookups by the manifest's digest can start
	// beside the read. It is the index's word only: the manifest resolved
	// may be another.
	Reading func(r *Resolved)
}

// Resolve resolves ref in t and picks the manifest for arch (systemd
// naming; "" means the host's): an index entry whose platform is
// linux/<arch>, else an entry without platform that is not for another
// architecture; a single manifest is used when its annotations (if any)
// allow arch. The manifest is size-limited and digest-checked, its layer
// and title validated; nothing of the image is downloaded. An index may
// list at most MaxIndexEntries manifests; each digest is read once, and
// at most a few candidates are read (see ResolveWith).
func Resolve(ctx context.Context, t ManifestReader, ref Reference, arch extension.Arch) (*Resolved, error) {
	return ResolveWith(ctx, t, ref, arch, ResolveOptions{})
}

// ResolveWith is Resolve with options.
func ResolveWith(ctx context.Context, t ManifestReader, ref Reference, arch extension.Arch, o ResolveOptions) (*Resolved, error) {
	if arch == "" {
		arch = extension.HostArch()
	}
	root, body, err := fetchRootFrom(ctx, t, ref, o.Root, o.RootBody)
	if err != nil {
		return nil, err
	}
	r := &Resolved{Ref: ref, Root: root}
	if !mediatype.IsIndex(root.MediaType) {
		e, err := parseEntry(ref, root, body, nil)
		if err != nil {
			return nil, err
		}
		if !archAllows(e, arch) {
			return nil, sentinel(ErrNoPlatform, "%s: the manifest is for %s only, not %s", ref, e.Metadata.Arch, arch)
		}
		r.Entry = *e
		return r, nil
	}
	idx, err := parseIndex(ref, root, body)
	if err != nil {
		return nil, err
	}
	r.Index = idx
	want := Platform(arch)
	limit, verified := maxUnverifiedCandidates, false
	for i, d := range candidates(idx, want) {
		if i == limit && !verified && o.VerifyIndex != nil {
			// Reading more: only for an index the trust policy accepts.
			if err := o.VerifyIndex(ctx, root); err != nil {
				return nil, fmt.Errorf("%s: index %s lists more than %d manifests that could be for %s, and its own signature does not verify (%v): refusing to read more of them: %w", ref, root.Digest, limit, arch, err, ErrNotExtension)
			}
			limit, verified = MaxCandidates, true
		}
		if i == limit {
			return nil, fmt.Errorf("%s: index %s lists more than %d manifests that could be for %s (an extension artifact has one per architecture): %w", ref, root.Digest, limit, arch, ErrNotExtension)
		}
		if i == 0 && o.Reading != nil {
			o.Reading(&Resolved{Ref: ref, Root: root, Index: idx, Entry: Entry{Platform: d.Platform, Descriptor: d}})
		}
		e, err := fetchEntry(ctx, t, ref, d)
		if err != nil {
			return nil, err
		}
		if d.Platform == nil && !archAllows(e, arch) {
			continue
		}
		r.Entry = *e
		return r, nil
	}
	return nil, sentinel(ErrNoPlatform, "%s: no build for %s (%s); available: %s", ref, arch, PlatformString(want), availablePlatforms(idx))
}

// candidates lists the manifests of idx that may be for platform want, in
// the order Resolve reads them: those whose platform matches, then those
// without one; each digest once.
func candidates(idx *ocispec.Index, want *ocispec.Platform) []ocispec.Descriptor {
	var exact, anyArch []ocispec.Descriptor
	seen := map[digest.Digest]bool{}
	for _, d := range idx.Manifests {
		if !mediatype.IsManifest(d.MediaType) || seen[d.Digest] {
			continue // one read per digest, whatever the index repeats
		}
		switch {
		case d.Platform == nil:
			seen[d.Digest] = true
			anyArch = append(anyArch, d)
		case want != nil && platformMatches(d.Platform, want):
			seen[d.Digest] = true
			exact = append(exact, d)
		}
	}
	return append(exact, anyArch...)
}

// parseIndex reads an index and refuses one that lists more than
// MaxIndexEntries manifests.
func parseIndex(ref Reference, root ocispec.Descriptor, body []byte) (*ocispec.Index, error) {
	var idx ocispec.Index
	if err := json.Unmarshal(body, &idx); err != nil {
		return nil, fmt.Errorf("%s: index %s: %w: %v", ref, root.Digest, ErrNotExtension, err)
	}
	if n := len(idx.Manifests); n > MaxIndexEntries {
		return nil, fmt.Errorf("%s: index %s lists %d manifests, more than the %d an extension artifact may have: %w", ref, root.Digest, n, MaxIndexEntries, ErrNotExtension)
	}
	return &idx, nil
}

// Describe reads every manifest ref points to (all platforms), without
// downloading any image.
func Describe(ctx context.Context, t ManifestReader, ref Reference) (*Artifact, error) {
	root, body, err := fetchRoot(ctx, t, ref)
	if err != nil {
		return nil, err
	}
	a := &Artifact{Ref: ref, Root: root}
	if !mediatype.IsIndex(root.MediaType) {
		e, err := parseEntry(ref, root, body, nil)
		if err != nil {
			return nil, err
		}
		a.Entries = []Entry{*e}
		return a, nil
	}
	idx, err := parseIndex(ref, root, body)
	if err != nil {
		return nil, err
	}
	a.Index = idx
	seen := map[digest.Digest]bool{}
	var read int64
	repeats := 0
	for _, d := range idx.Manifests {
		if !mediatype.IsManifest(d.MediaType) {
			a.Skipped = append(a.Skipped, fmt.Sprintf("%s: %s is not an image manifest", d.Digest, d.MediaType))
			continue
		}
		if seen[d.Digest] {
			repeats++
			continue // read once: an index repeating one digest costs nothing
		}
		seen[d.Digest] = true
		if read += max(d.Size, 0); read > MaxDescribeBytes {
			return nil, fmt.Errorf("%s: index %s lists more than %d bytes of manifests: %w", ref, root.Digest, MaxDescribeBytes, ErrNotExtension)
		}
		e, err := fetchEntry(ctx, t, ref, d)
		if err != nil {
			if errors.Is(err, ErrNotExtension) {
				a.Skipped = append(a.Skipped, err.Error())
				continue
			}
			return nil, err
		}
		a.Entries = append(a.Entries, *e)
	}
	if repeats > 0 {
		a.Skipped = append(a.Skipped, fmt.Sprintf("%d entries repeat a manifest listed before", repeats))
	}
	if len(a.Entries) == 0 {
		return nil, fmt.Errorf("%s: the index lists no extension manifest: %w", ref, ErrNotExtension)
	}
	return a, nil
}

// fetchRoot resolves ref and reads the manifest or index it points to.
func fetchRoot(ctx context.Context, t ManifestReader, ref Reference) (ocispec.Descriptor, []byte, error) {
	return fetchRootFrom(ctx, t, ref, ocispec.Descriptor{}, nil)
}

// ResolveRoot resolves ref in r to what it points to (an index or a
// manifest). Its errors name ref once: a missing tag or digest says which
// and matches ErrNotFound; a registry's refusal is worded by Explain.
func ResolveRoot(ctx context.Context, r content.Resolver, ref Reference) (ocispec.Descriptor, error) {
	desc, err := r.Resolve(ctx, ref.Reference())
	if err == nil {
		return desc, nil
	}
	return desc, rootError(ref, err)
}

// rootError words the failure to resolve ref (ResolveRoot).
func rootError(ref Reference, err error) error {
	if errors.Is(err, errdef.ErrNotFound) {
		what := "tag " + ref.Tag
		if ref.Digest != "" {
			what = "manifest " + ref.Digest.String()
		}
		return sentinel(ErrNotFound, "%s: %s not found in %s", ref, what, ref.Scope())
	}
	return Explain(ref, fmt.Errorf("%s: resolve: %w", ref, err))
}

// fetchRootFrom is fetchRoot for a ref that resolved to known already
// (when its digest is set; body, when set, is its bytes, checked): the
// tag is not asked again.
func fetchRootFrom(ctx context.Context, t ManifestReader, ref Reference, known ocispec.Descriptor, body []byte) (ocispec.Descriptor, []byte, error) {
	if known.Digest == "" {
		if rf, ok := t.(registry.ReferenceFetcher); ok {
			return fetchRootByReference(ctx, rf, ref)
		}
	}
	desc, err := known, error(nil)
	if known.Digest == "" {
		desc, err = ResolveRoot(ctx, t, ref)
	}
	if err != nil {
		return desc, nil, err
	}
	if err := checkRoot(ref, desc); err != nil {
		return desc, nil, err
	}
	if body != nil && int64(len(body)) == desc.Size && desc.Digest.Validate() == nil && desc.Digest.Algorithm().FromBytes(body) == desc.Digest {
		return desc, body, nil
	}
	body, err = FetchManifest(ctx, t, desc)
	if err != nil {
		return desc, nil, Explain(ref, fmt.Errorf("%s: %w", ref, err))
	}
	return desc, body, nil
}

// fetchRootByReference is fetchRootFrom in one request: the descriptor is
// the registry's answer's, and the bytes are checked against it as they
// are read.
func fetchRootByReference(ctx context.Context, rf registry.ReferenceFetcher, ref Reference) (ocispec.Descriptor, []byte, error) {
	desc, rc, err := rf.FetchReference(ctx, ref.Reference())
	if err != nil {
		return desc, nil, rootError(ref, err)
	}
	defer rc.Close()
	if err := checkRoot(ref, desc); err != nil {
		return desc, nil, err
	}
	if desc.Size < 0 || desc.Size > MaxManifestSize {
		return desc, nil, fmt.Errorf("%s: manifest %w: %w", ref, &blob.TooLargeError{Desc: desc, Limit: MaxManifestSize}, ErrNotExtension)
	}
	body, err := content.ReadAll(rc, desc) // size and digest checked
	if err != nil {
		return desc, nil, Explain(ref, fmt.Errorf("%s: manifest %s: %w", ref, desc.Digest, err))
	}
	return desc, body, nil
}

// checkRoot refuses a root that is not for an extension artifact, before
// its bytes are read.
func checkRoot(ref Reference, desc ocispec.Descriptor) error {
	if ref.Digest != "" && desc.Digest != ref.Digest {
		return fmt.Errorf("%s: the store answered %s for digest %s", ref, desc.Digest, ref.Digest)
	}
	if !mediatype.IsIndex(desc.MediaType) && !mediatype.IsManifest(desc.MediaType) {
		return fmt.Errorf("%s: %s is neither an image index nor an image manifest: %w", ref, desc.MediaType, ErrNotExtension)
	}
	if mediatype.IsIndex(desc.MediaType) && desc.Size > MaxIndexSize {
		return fmt.Errorf("%s: index %s is %d bytes, more than the %d an extension artifact's index may have (at most %d manifests): %w", ref, desc.Digest, desc.Size, MaxIndexSize, MaxIndexEntries, ErrNotExtension)
	}
	return nil
}

// FetchManifest reads a manifest or index of at most MaxManifestSize bytes
// and checks its size and digest against desc.
func FetchManifest(ctx context.Context, t content.Fetcher, desc ocispec.Descriptor) ([]byte, error) {
	b, err := blob.Read(ctx, t, desc, MaxManifestSize)
	if tl := (*blob.TooLargeError)(nil); errors.As(err, &tl) {
		if desc.Size < 0 {
			return nil, fmt.Errorf("manifest %w", err)
		}
		return nil, fmt.Errorf("manifest %w: %w", err, ErrNotExtension)
	}
	if err != nil {
		return nil, fmt.Errorf("manifest %s: %w", desc.Digest, err)
	}
	return b, nil
}

func fetchEntry(ctx context.Context, t ManifestReader, ref Reference, d ocispec.Descriptor) (*Entry, error) {
	body, err := FetchManifest(ctx, t, d)
	if err != nil {
		return nil, Explain(ref, fmt.Errorf("%s: %w", ref, err))
	}
	return parseEntry(ref, d, body, d.Platform)
}

// parseEntry classifies a manifest and validates what a node would use.
func parseEntry(ref Reference, d ocispec.Descriptor, body []byte, p *ocispec.Platform) (*Entry, error) {
	var m ocispec.Manifest
	if err := json.Unmarshal(body, &m); err != nil {
		return nil, fmt.Errorf("%s: manifest %s: %w: %v", ref, d.Digest, ErrNotExtension, err)
	}
	if len(m.Layers) != 1 {
		return nil, fmt.Errorf("%s: manifest %s has %d layers; an extension artifact has exactly one, the image file: %w", ref, d.Digest, len(m.Layers), ErrNotExtension)
	}
	e := &Entry{Platform: p, Descriptor: d, Manifest: &m, Layer: m.Layers[0]}
	if e.Layer.Size < 0 {
		return nil, fmt.Errorf("%s: manifest %s: layer has a negative size: %w", ref, d.Digest, ErrNotExtension)
	}
	if err := e.Layer.Digest.Validate(); err != nil {
		return nil, fmt.Errorf("%s: manifest %s: layer digest: %w", ref, d.Digest, err)
	}
	title, hasTitle := e.Layer.Annotations[AnnotationTitle]
	if hasTitle {
		if err := extension.ValidateFileName(title); err != nil {
			return nil, fmt.Errorf("%s: manifest %s: layer title annotation: %v: refusing to write outside the target directory: %w", ref, d.Digest, err, ErrNotExtension)
		}
	}
	md, ours, err := MetadataFromAnnotations(m.Annotations)
	switch {
	case err != nil:
		return nil, fmt.Errorf("%s: manifest %s: %w (%w)", ref, d.Digest, err, ErrNotExtension)
	case ours:
		if !isOurLayer(e.Layer.MediaType) {
			return nil, fmt.Errorf("%s: manifest %s: layer media type %s is not a sysext image type: %w", ref, d.Digest, e.Layer.MediaType, ErrNotExtension)
		}
		e.Kind, e.Metadata = KindSysext, md
	case e.Layer.MediaType == MediaTypeKairos || m.ArtifactType == MediaTypeKairos:
		e.Kind = KindKairos
	default:
		e.Kind = KindPlain
	}
	switch {
	case e.Kind == KindSysext && md.Version != "" && md.Arch != "":
		e.FileName = extension.FileName(md.Name, md.Version, md.Arch)
	case hasTitle:
		e.FileName = title
	case e.Kind == KindSysext:
		e.FileName = md.Name + extension.ImageSuffix
	default:
		e.FileName = e.Layer.Digest.Encoded() + extension.ImageSuffix
	}
	return e, nil
}

func isOurLayer(mt string) bool {
	return mt == MediaTypeSquashfs || mt == MediaTypeEROFS || mt == MediaTypeDisk
}

// archAllows reports whether an entry (from a single manifest or an index
// entry without platform) may serve arch: foreign artifacts say nothing
// until their content is checked, ours say it in the annotations.
func archAllows(e *Entry, arch extension.Arch) bool {
	if e.Kind != KindSysext {
		return true
	}
	a := e.Metadata.Arch
	return a == "" || a == extension.AnyArch || a == arch
}

func platformMatches(have, want *ocispec.Platform) bool {
	if have.OS != "" && have.OS != want.OS {
		return false
	}
	if have.Architecture != want.Architecture {
		return false
	}
	return want.Variant == "" || have.Variant == "" || have.Variant == want.Variant
}

func availablePlatforms(idx *ocispec.Index) string {
	var ps []string
	seen := map[string]bool{}
	for _, d := range idx.Manifests {
		if !mediatype.IsManifest(d.MediaType) {
			continue
		}
		s := PlatformString(d.Platform)
		if d.Platform != nil && d.Platform.OS == "unknown" {
			continue
		}
		if !seen[s] {
			seen[s] = true
			ps = append(ps, s)
		}
	}
	sort.Strings(ps)
	if len(ps) == 0 {
		return "no platforms"
	}
	return strings.Join(ps, ", ")
}

// sentinelError is a message that also matches a sentinel with errors.Is,
// so the sentinel's words need not repeat in the text.
type sentinelError struct {
	msg string
	is  error
}

func (e *sentinelError) Error() string        { return e.msg }
func (e *sentinelError) Is(target error) bool { return target == e.is }

func sentinel(is error, format string, args ...any) error {
	return &sentinelError{fmt.Sprintf(format, args...), is}
}
