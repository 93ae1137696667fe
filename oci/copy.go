package oci

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/sysext/sysext/internal/mediatype"
	"oras.land/oras-go/v2"
	"oras.land/oras-go/v2/errdef"
)

// CopyOptions tune Copy. The zero value copies everything.
type CopyOptions struct {
	// SkipReferrers copies only the artifact, no signatures or other
	// referrers.
	SkipReferrers bool
	// Concurrency bounds parallel blob copies (default 3).
	Concurrency int
	// OnCopied is called after each blob or manifest is copied (not for
	// those the destination already had).
	OnCopied func(desc ocispec.Descriptor)
}

// CopyResult says what Copy wrote.
type CopyResult struct {
	Root      ocispec.Descriptor   // the index (or manifest) now at the destination
	Referrers []ocispec.Descriptor // referrers copied with it (OCI 1.1 subject or fallback tag)
	Tags      []string             // cosign tags copied (sha256-<hex>.sig, .att, .sbom)
}

// cosignSuffixes are the tags cosign v2 attaches to sha256-<hex>.
var cosignSuffixes = []string{".sig", ".att", ".sbom"}

// Copy copies what srcRef points to, with every platform of an index, from
// src to dst and tags it dstRef.Tag (when dstRef has only a digest, the
// digests must agree). Unless opts.SkipReferrers, it also copies, for the
// root and each of its manifests, their referrers (the OCI 1.1 referrers
// API where the source has it, else the sha256-<hex> fallback tag index;
// recursively, so signatures on attestations come too) and cosign's
// sha256-<hex>.sig/.att/.sbom tags. Any two stores work: registry to
// registry, registry to layout and back. Blobs the destination has are not
// copied again. Every error is a *CopyError that says which side failed.
func Copy(ctx context.Context, src CopySource, srcRef Reference, dst CopyDestination, dstRef Reference, opts CopyOptions) (*CopyResult, error) {
	fromSrc := func(op string, err error) error {
		return &CopyError{Op: op, Origin: CopyOriginSource, Ref: srcRef, Err: err}
	}
	toDst := func(op string, err error) error {
		return &CopyError{Op: op, Origin: CopyOriginDestination, Ref: dstRef, Err: err}
	}
	root, err := src.Resolve(ctx, srcRef.Reference())
	if err != nil {
		if errors.Is(err, errdef.ErrNotFound) {
			return nil, fromSrc("resolve", sentinel(ErrNotFound, "copy: %s: not found in %s", srcRef, srcRef.Scope()))
		}
		return nil, fromSrc("resolve", Explain(srcRef, fmt.Errorf("copy: %w", err)))
	}
	if root.Size > MaxManifestSize {
		return nil, fromSrc("resolve", fmt.Errorf("copy: %s: manifest %s is %d bytes, more than the %d allowed", srcRef, root.Digest, root.Size, MaxManifestSize))
	}
	if mediatype.IsIndex(root.MediaType) && root.Size > MaxIndexSize {
		// As Resolve: an index that large lists thousands of manifests.
		return nil, fromSrc("resolve", fmt.Errorf("copy: %s: index %s is %d bytes, more than the %d an extension artifact's index may have: %w", srcRef, root.Digest, root.Size, MaxIndexSize, ErrNotExtension))
	}
	if dstRef.Digest != "" && dstRef.Digest != root.Digest {
		return nil, toDst("check", fmt.Errorf("copy: %s is %s, not the digest %s the destination names", srcRef, root.Digest, dstRef.Digest))
	}
	co := oras.DefaultCopyGraphOptions
	co.Concurrency = opts.Concurrency
	if co.Concurrency == 0 {
		co.Concurrency = 3
	}
	co.MaxMetadataBytes = MaxManifestSize
	if opts.OnCopied != nil {
		co.PostCopy = func(_ context.Context, d ocispec.Descriptor) error {
			opts.OnCopied(d)
			return nil
		}
	}
	copyGraph := func(d ocispec.Descriptor) error {
		if err := oras.CopyGraph(ctx, src, dst, d, co); err != nil {
			var ce *oras.CopyError
			if errors.As(err, &ce) && ce.Origin == oras.CopyErrorOriginDestination {
				return toDst(ce.Op, Explain(dstRef, fmt.Errorf("copy to %s: %w", dstRef, err)))
			}
			op := "copy"
			if ce != nil {
				op = ce.Op
			}
			return fromSrc(op, Explain(srcRef, fmt.Errorf("copy from %s: %w", srcRef, err)))
		}
		return nil
	}
	if err := copyGraph(root); err != nil {
		return nil, err
	}
	if dstRef.Tag != "" {
		if err := dst.Tag(ctx, root, dstRef.Tag); err != nil {
			return nil, toDst("tag", Explain(dstRef, fmt.Errorf("copy: tag %s: %w", dstRef, err)))
		}
	}
	res := &CopyResult{Root: root}
	if opts.SkipReferrers {
		return res, nil
	}
	nodes := []ocispec.Descriptor{root}
	if mediatype.IsIndex(root.MediaType) {
		body, err := FetchManifest(ctx, src, root)
		if err != nil {
			return nil, fromSrc("referrers", fmt.Errorf("copy: %s: %w", srcRef, err))
		}
		var idx ocispec.Index
		if err := json.Unmarshal(body, &idx); err != nil {
			return nil, fromSrc("referrers", fmt.Errorf("copy: %s: index: %w", srcRef, err))
		}
		nodes = append(nodes, idx.Manifests...)
	}
	seen := map[string]bool{}
	var walk func(d ocispec.Descriptor, depth int) error
	walk = func(d ocispec.Descriptor, depth int) error {
		if depth > 4 {
			return nil // signatures of signatures of ...: enough
		}
		var refs []ocispec.Descriptor
		err := src.Referrers(ctx, d, "", func(rs []ocispec.Descriptor) error {
			refs = append(refs, rs...)
			return nil
		})
		if err != nil && !errors.Is(err, errdef.ErrNotFound) && !errors.Is(err, errdef.ErrUnsupported) {
			return fromSrc("referrers", Explain(srcRef, fmt.Errorf("copy: list referrers of %s: %w", d.Digest, err)))
		}
		for _, r := range refs {
			if seen[r.Digest.String()] {
				continue
			}
			seen[r.Digest.String()] = true
			if err := copyGraph(r); err != nil {
				return err
			}
			res.Referrers = append(res.Referrers, r)
			if err := walk(r, depth+1); err != nil {
				return err
			}
		}
		for _, suffix := range cosignSuffixes {
			tag := CosignTag(d, suffix)
			t, err := src.Resolve(ctx, tag)
			if errors.Is(err, errdef.ErrNotFound) {
				continue
			}
			if err != nil {
				return fromSrc("referrers", Explain(srcRef, fmt.Errorf("copy: resolve %s: %w", tag, err)))
			}
			if err := copyGraph(t); err != nil {
				return err
			}
			if err := dst.Tag(ctx, t, tag); err != nil {
				return toDst("tag", Explain(dstRef, fmt.Errorf("copy: tag %s: %w", tag, err)))
			}
			res.Tags = append(res.Tags, tag)
		}
		return nil
	}
	for _, n := range nodes {
		if err := walk(n, 0); err != nil {
			return nil, err
		}
	}
	return res, nil
}
