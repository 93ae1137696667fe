package verify

import (
	"context"
	"encoding/json"
	"fmt"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/content"

	"github.com/sysext/sysext/internal/blob"
	"github.com/sysext/sysext/internal/mediatype"
)

// TreeEntry is one manifest's outcome in a TreeReport.
type TreeEntry struct {
	Descriptor ocispec.Descriptor
	Verified   bool
	// Signatures are the valid signatures the decision rests on (none when
	// the policy accepted it unsigned).
	Signatures []Signature
	// Unsigned says the policy accepted it without a signature.
	Unsigned bool
	// Err says why it is not verified.
	Err error
}

// TreeReport is what VerifyTree found: the root and, for an index, each
// image manifest it lists.
type TreeReport struct {
	TreeEntry
	Manifests []TreeEntry
}

// VerifyTree checks root (what ref resolved to) and, when root is an image
// index, every image manifest it lists, each as VerifyEntry does: a
// signature on the index covers the manifests it lists. The root is
// verified when its own signature is valid, or when it is an index that
// lists manifests and every image manifest among them verified (what a node
// installs is then verified whichever it picks). An error means the tree
// could not be read; a refusal is in the report.
func (p *Policy) VerifyTree(ctx context.Context, src Source, ref string, root ocispec.Descriptor) (*TreeReport, error) {
	one := func(d, via ocispec.Descriptor) TreeEntry {
		e := TreeEntry{Descriptor: d}
		v, err := p.VerifyEntry(ctx, src, ref, via, d)
		if err != nil {
			e.Err = err
			return e
		}
		e.Verified, e.Signatures, e.Unsigned = true, v.Signatures(), v.Unsigned()
		return e
	}
	rep := &TreeReport{TreeEntry: one(root, ocispec.Descriptor{})}
	if !mediatype.IsIndex(root.MediaType) {
		return rep, nil
	}
	listed, err := indexManifests(ctx, src, root)
	if err != nil {
		return nil, err
	}
	all := len(listed) > 0
	for _, m := range listed {
		if !mediatype.IsManifest(m.MediaType) {
			continue
		}
		e := one(m, root)
		all = all && e.Verified
		rep.Manifests = append(rep.Manifests, e)
	}
	if !rep.Verified && all {
		rep.Verified, rep.Err = true, nil
	}
	return rep, nil
}

// indexManifests reads the image index desc (size-limited, digest-checked)
// and returns what it lists.
func indexManifests(ctx context.Context, src content.Fetcher, desc ocispec.Descriptor) ([]ocispec.Descriptor, error) {
	b, err := blob.Read(ctx, src, desc, maxManifestSize)
	if err != nil {
		return nil, fmt.Errorf("index %s: %w", desc.Digest, err)
	}
	var idx ocispec.Index
	if err := json.Unmarshal(b, &idx); err != nil {
		return nil, fmt.Errorf("index %s: not an image index: %w", desc.Digest, err)
	}
	return idx.Manifests, nil
}
