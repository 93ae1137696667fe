package verify

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/sysext/sysext/internal/blob"
	"github.com/sysext/sysext/internal/mediatype"
	"oras.land/oras-go/v2"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/errdef"
)

// Signed says which manifest was signed and where its signature went.
type Signed struct {
	Digest    digest.Digest      // the signed manifest
	MediaType string             // its media type (index or image manifest)
	Tag       string             // the sha256-<hex>.sig tag
	Manifest  ocispec.Descriptor // the signature manifest now under Tag
}

// SignTree signs desc and, when desc is an image index, every image
// manifest it lists, so a node that picks its platform's manifest finds a
// signature for it. repo is the "host/repo" recorded in each payload as
// critical.identity.docker-reference. Manifests are signed children first,
// the index last.
func SignTree(ctx context.Context, dst oras.Target, desc ocispec.Descriptor, repo string, s *Signer) ([]Signed, error) {
	var out []Signed
	if mediatype.IsIndex(desc.MediaType) {
		listed, err := indexManifests(ctx, dst, desc)
		if err != nil {
			return nil, err
		}
		for _, m := range listed {
			if !mediatype.IsManifest(m.MediaType) {
				continue
			}
			sd, err := Sign(ctx, dst, m, repo, s)
			if err != nil {
				return out, err
			}
			out = append(out, sd)
		}
	}
	sd, err := Sign(ctx, dst, desc, repo, s)
	if err != nil {
		return out, err
	}
	return append(out, sd), nil
}

// Sign signs the manifest desc with s and stores the signature the way
// cosign v2 does: a layer holding the simple signing payload, with the
// base64 signature in its annotation, in the manifest tagged
// sha256-<hex>.sig. An existing signature manifest keeps its layers and
// gets the new one appended, as cosign does.
func Sign(ctx context.Context, dst oras.Target, desc ocispec.Descriptor, repo string, s *Signer) (Signed, error) {
	res := Signed{Digest: desc.Digest, MediaType: desc.MediaType, Tag: SignatureTag(desc.Digest)}
	payload, err := newPayloadWith(desc.Digest, repo, s.annotations)
	if err != nil {
		return res, fmt.Errorf("sign %s: %w", desc.Digest, err)
	}
	sig, err := s.sv.SignMessage(bytes.NewReader(payload))
	if err != nil {
		return res, fmt.Errorf("sign %s: %w", desc.Digest, err)
	}
	layer := content.NewDescriptorFromBytes(MediaTypeSimpleSigning, payload)
	layer.Annotations = map[string]string{AnnotationSignature: base64.StdEncoding.EncodeToString(sig)}

	layers, err := existingSignatureLayers(ctx, dst, res.Tag)
	if err != nil {
		return res, fmt.Errorf("sign %s: %w", desc.Digest, err)
	}
	layers = append(layers, layer)

	if err := pushIfAbsent(ctx, dst, layer, payload); err != nil {
		return res, fmt.Errorf("sign %s: push payload: %w", desc.Digest, err)
	}
	cfgBytes, err := signatureConfig(layers)
	if err != nil {
		return res, fmt.Errorf("sign %s: %w", desc.Digest, err)
	}
	cfg := content.NewDescriptorFromBytes(ocispec.MediaTypeImageConfig, cfgBytes)
	if err := pushIfAbsent(ctx, dst, cfg, cfgBytes); err != nil {
		return res, fmt.Errorf("sign %s: push config: %w", desc.Digest, err)
	}
	man := ocispec.Manifest{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageManifest,
		Config:    cfg,
		Layers:    layers,
	}
	manBytes, err := json.Marshal(man)
	if err != nil {
		return res, fmt.Errorf("sign %s: %w", desc.Digest, err)
	}
	manDesc := content.NewDescriptorFromBytes(ocispec.MediaTypeImageManifest, manBytes)
	if err := pushIfAbsent(ctx, dst, manDesc, manBytes); err != nil {
		return res, fmt.Errorf("sign %s: push signature manifest: %w", desc.Digest, err)
	}
	if err := dst.Tag(ctx, manDesc, res.Tag); err != nil {
		return res, fmt.Errorf("sign %s: tag %s: %w", desc.Digest, res.Tag, err)
	}
	res.Manifest = manDesc
	return res, nil
}

// existingSignatureLayers returns the layers of the signature manifest under
// tag, or none when there is no such tag.
func existingSignatureLayers(ctx context.Context, src oras.ReadOnlyTarget, tag string) ([]ocispec.Descriptor, error) {
	d, err := src.Resolve(ctx, tag)
	if errors.Is(err, errdef.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("resolve %s: %w", tag, err)
	}
	b, err := blob.Read(ctx, src, d, maxManifestSize)
	if err != nil {
		return nil, fmt.Errorf("signature manifest %s: %w", tag, err)
	}
	var m ocispec.Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("signature manifest %s is not an image manifest: %w", tag, err)
	}
	if len(m.Layers) >= maxSignatureSigs {
		return nil, fmt.Errorf("signature manifest %s already holds %d signatures: refusing to add more", tag, len(m.Layers))
	}
	return m.Layers, nil
}

// signatureConfig is the image config cosign writes next to its signature
// layers: empty apart from the layers' diff IDs.
func signatureConfig(layers []ocispec.Descriptor) ([]byte, error) {
	ids := make([]digest.Digest, len(layers))
	for i, l := range layers {
		ids[i] = l.Digest
	}
	cfg := map[string]any{
		"architecture": "",
		"os":           "",
		"config":       map[string]any{},
		"rootfs":       map[string]any{"type": "layers", "diff_ids": ids},
	}
	return json.Marshal(cfg)
}

func pushIfAbsent(ctx context.Context, dst content.Storage, d ocispec.Descriptor, b []byte) error {
	ok, err := dst.Exists(ctx, d)
	if err == nil && ok {
		return nil
	}
	err = dst.Push(ctx, d, bytes.NewReader(b))
	if errors.Is(err, errdef.ErrAlreadyExists) {
		return nil
	}
	return err
}
