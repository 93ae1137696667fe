package ocitest

import (
	"context"
	"encoding/json"
	"testing"

	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2"
)

// PushRaw pushes a one-layer manifest the way other tools do (layer bytes
// as they are, any media and artifact types and annotations) and tags it:
// how a test puts a crafted image behind a reference.
func PushRaw(t testing.TB, tg oras.Target, tag string, layer []byte, layerType, artifactType string, layerAnn, manAnn map[string]string) {
	t.Helper()
	ctx := context.Background()
	ld, err := oras.PushBytes(ctx, tg, layerType, layer)
	if err != nil {
		t.Fatal(err)
	}
	ld.Annotations = layerAnn
	if _, err := oras.PushBytes(ctx, tg, ocispec.MediaTypeEmptyJSON, []byte("{}")); err != nil {
		t.Fatal(err)
	}
	m := ocispec.Manifest{
		Versioned:    specs.Versioned{SchemaVersion: 2},
		MediaType:    ocispec.MediaTypeImageManifest,
		ArtifactType: artifactType,
		Config:       ocispec.DescriptorEmptyJSON,
		Layers:       []ocispec.Descriptor{ld},
		Annotations:  manAnn,
	}
	m.Config.Data = nil
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := oras.TagBytes(ctx, tg, ocispec.MediaTypeImageManifest, b, tag); err != nil {
		t.Fatal(err)
	}
}
