package oci

import (
	"context"
	"errors"
	"fmt"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/errdef"
)

// Attached is what hangs off one manifest: OCI 1.1 referrers (found with
// the referrers API, or the sha256-<hex> fallback tag index) and cosign's
// sha256-<hex>.sig/.att/.sbom tags.
type Attached struct {
	Referrers []ocispec.Descriptor // with ArtifactType set where the store says it
	Tags      map[string]ocispec.Descriptor
}

// ListAttached lists the referrers and cosign tags of desc in t. It reads
// only small manifests and tag lookups, never an image.
func ListAttached(ctx context.Context, t AttachedLister, desc ocispec.Descriptor) (*Attached, error) {
	a := &Attached{Tags: map[string]ocispec.Descriptor{}}
	err := t.Referrers(ctx, desc, "", func(rs []ocispec.Descriptor) error {
		a.Referrers = append(a.Referrers, rs...)
		return nil
	})
	if err != nil && !errors.Is(err, errdef.ErrNotFound) && !errors.Is(err, errdef.ErrUnsupported) {
		return nil, fmt.Errorf("list referrers of %s: %w", desc.Digest, err)
	}
	for _, suffix := range cosignSuffixes {
		tag := CosignTag(desc, suffix)
		d, err := t.Resolve(ctx, tag)
		if errors.Is(err, errdef.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("resolve %s: %w", tag, err)
		}
		a.Tags[tag] = d
	}
	return a, nil
}

// CosignTag is the tag cosign v2 gives desc's signatures (suffix ".sig"),
// attestations (".att") or SBOMs (".sbom"): sha256-<hex><suffix>.
func CosignTag(desc ocispec.Descriptor, suffix string) string {
	return fmt.Sprintf("%s-%s%s", desc.Digest.Algorithm(), desc.Digest.Encoded(), suffix)
}
