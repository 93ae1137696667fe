package verify

import (
	"context"
	"crypto"
	"encoding/json"
	"errors"
	"fmt"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/sysext/sysext/internal/blob"
	"oras.land/oras-go/v2"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/errdef"
	"oras.land/oras-go/v2/registry"
)

// Source is the repository signatures are read from: oras-go's read-only
// target. When it also lists referrers (registry.ReferrerLister) or finds
// predecessors (content.PredecessorFinder), cosign v3 bundles attached as
// OCI 1.1 referrers are found; the referrers fallback tag is always read.
type Source = oras.ReadOnlyTarget

// candidate is one signature found for a manifest, not yet checked.
type candidate struct {
	format string // FormatCosign or FormatBundle
	where  string // where it was found, for messages
	// FormatCosign
	payload     []byte
	annotations map[string]string
	// FormatBundle
	bundle []byte
}

// Signature formats, as reported in Signature.Format.
const (
	FormatCosign = "cosign"               // simple signing payload under the .sig tag
	FormatBundle = "sigstore-bundle-v0.3" // Sigstore bundle attached as a referrer
)

// discovery is everything found for one manifest: candidates, and the
// problems met while looking (unreadable or malformed signature data), which
// explain a failure when nothing valid remains.
type discovery struct {
	candidates []candidate
	problems   []error
}

// discover finds every signature attached to desc in src.
func discover(ctx context.Context, src Source, desc ocispec.Descriptor) (*discovery, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	dv := &discovery{}
	dv.findSigTag(ctx, src, desc)
	dv.findBundles(ctx, src, desc)
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return dv, nil
}

func (dv *discovery) problem(format string, args ...any) {
	dv.problems = append(dv.problems, fmt.Errorf(format, args...))
}

// findSigTag reads cosign's sha256-<hex>.sig manifest.
func (dv *discovery) findSigTag(ctx context.Context, src Source, desc ocispec.Descriptor) {
	tag := SignatureTag(desc.Digest)
	d, err := src.Resolve(ctx, tag)
	if errors.Is(err, errdef.ErrNotFound) {
		return
	}
	if err != nil {
		dv.problem("tag %s: %w", tag, err)
		return
	}
	b, err := blob.Read(ctx, src, d, maxManifestSize)
	if err != nil {
		dv.problem("tag %s: %w", tag, err)
		return
	}
	var m ocispec.Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		dv.problem("tag %s: signature manifest is not an image manifest: %w", tag, err)
		return
	}
	if len(m.Layers) > maxSignatureSigs {
		dv.problem("tag %s: %d signature layers, over the limit of %d", tag, len(m.Layers), maxSignatureSigs)
		return
	}
	for i, l := range m.Layers {
		where := fmt.Sprintf("tag %s layer %d", tag, i)
		if l.MediaType != MediaTypeSimpleSigning {
			dv.problem("%s: media type %q is not %s", where, l.MediaType, MediaTypeSimpleSigning)
			continue
		}
		if l.Annotations[AnnotationSignature] == "" {
			dv.problem("%s: no %s annotation", where, AnnotationSignature)
			continue
		}
		p, err := blob.Read(ctx, src, l, maxPayloadSize)
		if err != nil {
			dv.problem("%s: payload: %w", where, err)
			continue
		}
		dv.candidates = append(dv.candidates, candidate{format: FormatCosign, where: where, payload: p, annotations: l.Annotations})
	}
}

// findBundles reads Sigstore bundles attached to desc, through the
// referrers API where src has one and through the fallback tag index.
func (dv *discovery) findBundles(ctx context.Context, src Source, desc ocispec.Descriptor) {
	seen := map[string]bool{}
	var refs []ocispec.Descriptor
	switch s := src.(type) {
	case registry.ReferrerLister:
		err := s.Referrers(ctx, desc, MediaTypeBundleV03, func(rs []ocispec.Descriptor) error {
			refs = append(refs, rs...)
			if len(refs) > maxSignatureSigs {
				return fmt.Errorf("more than %d referrers", maxSignatureSigs)
			}
			return nil
		})
		if err != nil && !errors.Is(err, errdef.ErrNotFound) && !errors.Is(err, errdef.ErrUnsupported) {
			dv.problem("referrers of %s: %w", desc.Digest, err)
		}
	case content.ReadOnlyGraphStorage:
		rs, err := registry.Referrers(ctx, s, desc, MediaTypeBundleV03)
		if err != nil && !errors.Is(err, errdef.ErrNotFound) {
			dv.problem("referrers of %s: %w", desc.Digest, err)
		}
		refs = append(refs, rs...)
	}
	refs = append(refs, dv.fallbackIndex(ctx, src, desc)...)
	for _, r := range refs {
		if seen[r.Digest.String()] || r.ArtifactType != MediaTypeBundleV03 {
			continue
		}
		seen[r.Digest.String()] = true
		if len(seen) > maxSignatureSigs {
			dv.problem("more than %d bundles attached to %s: ignoring the rest", maxSignatureSigs, desc.Digest)
			return
		}
		dv.readBundle(ctx, src, r)
	}
}

// fallbackIndex lists the referrers recorded under the sha256-<hex> tag,
// which registries without the referrers API hold instead.
func (dv *discovery) fallbackIndex(ctx context.Context, src Source, desc ocispec.Descriptor) []ocispec.Descriptor {
	tag := fallbackTag(desc.Digest)
	d, err := src.Resolve(ctx, tag)
	if errors.Is(err, errdef.ErrNotFound) {
		return nil
	}
	if err != nil {
		dv.problem("tag %s: %w", tag, err)
		return nil
	}
	b, err := blob.Read(ctx, src, d, maxManifestSize)
	if err != nil {
		dv.problem("tag %s: %w", tag, err)
		return nil
	}
	var idx ocispec.Index
	if err := json.Unmarshal(b, &idx); err != nil {
		dv.problem("tag %s: not an image index: %w", tag, err)
		return nil
	}
	return idx.Manifests
}

func (dv *discovery) readBundle(ctx context.Context, src Source, r ocispec.Descriptor) {
	where := "referrer " + r.Digest.String()
	b, err := blob.Read(ctx, src, r, maxManifestSize)
	if err != nil {
		dv.problem("%s: %w", where, err)
		return
	}
	var m ocispec.Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		dv.problem("%s: not an image manifest: %w", where, err)
		return
	}
	if len(m.Layers) != 1 || m.Layers[0].MediaType != MediaTypeBundleV03 {
		dv.problem("%s: want exactly one %s layer", where, MediaTypeBundleV03)
		return
	}
	bb, err := blob.Read(ctx, src, m.Layers[0], maxBundleSize)
	if err != nil {
		dv.problem("%s: bundle: %w", where, err)
		return
	}
	dv.candidates = append(dv.candidates, candidate{format: FormatBundle, where: where, bundle: bb})
}

// SignedBy reports whether desc carries signatures in src (any found, in
// either format, whether or not anyone trusts them, or signature data that
// could not be read), and whether one of
// them verifies with pub (not asked when pub is nil). Push --append uses
// it so that replacing a signed index never silently drops its signatures.
func SignedBy(ctx context.Context, src Source, desc ocispec.Descriptor, pub crypto.PublicKey) (signed, byKey bool, err error) {
	dv, err := discover(ctx, src, desc)
	if err != nil {
		return false, false, fmt.Errorf("%s: %w", desc.Digest, err)
	}
	// Signature data that could not be read counts as signed: refusing is
	// the safe side of not knowing.
	signed = len(dv.candidates) > 0 || len(dv.problems) > 0
	if pub == nil {
		return signed, false, nil
	}
	r := Requirement{Keys: []crypto.PublicKey{pub}, IgnoreTlog: true}
	for _, c := range dv.candidates {
		if _, err := r.checkCandidate(c, desc.Digest); err == nil {
			return signed, true, nil
		}
	}
	return signed, false, nil
}
