package verify

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"testing"

	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/content/memory"
)

const testRepo = "registry.example/acme/ext"

// pushImage stores a small artifact manifest (with its layer) in dst and
// returns its descriptor.
func pushImage(t testing.TB, dst *memory.Store, body string) ocispec.Descriptor {
	t.Helper()
	ctx := context.Background()
	layerBytes := []byte(body)
	layer := content.NewDescriptorFromBytes("application/vnd.sysext.image.squashfs", layerBytes)
	mustPush(t, dst, layer, layerBytes)
	mustPush(t, dst, ocispec.DescriptorEmptyJSON, ocispec.DescriptorEmptyJSON.Data)
	m := ocispec.Manifest{
		Versioned:    specs.Versioned{SchemaVersion: 2},
		MediaType:    ocispec.MediaTypeImageManifest,
		ArtifactType: "application/vnd.sysext.image.v1",
		Config:       ocispec.DescriptorEmptyJSON,
		Layers:       []ocispec.Descriptor{layer},
	}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	d := content.NewDescriptorFromBytes(ocispec.MediaTypeImageManifest, b)
	mustPush(t, dst, d, b)
	if err := dst.Tag(ctx, d, body); err != nil {
		t.Fatal(err)
	}
	return d
}

func pushIndex(t testing.TB, dst *memory.Store, ms ...ocispec.Descriptor) ocispec.Descriptor {
	t.Helper()
	idx := ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageIndex, Manifests: ms}
	b, err := json.Marshal(idx)
	if err != nil {
		t.Fatal(err)
	}
	d := content.NewDescriptorFromBytes(ocispec.MediaTypeImageIndex, b)
	mustPush(t, dst, d, b)
	return d
}

func mustPush(t testing.TB, dst content.Pusher, d ocispec.Descriptor, b []byte) {
	t.Helper()
	if err := pushIfAbsent(context.Background(), dst.(content.Storage), d, b); err != nil {
		t.Fatal(err)
	}
}

// newTestSigner is a fresh in-memory key (no scrypt, so tests stay fast).
func newTestSigner(t testing.TB) *Signer {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s, err := NewSigner(k)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func keyRequirement(s ...*Signer) *Requirement {
	r := &Requirement{}
	for _, x := range s {
		r.Keys = append(r.Keys, x.PublicKey())
	}
	return r
}
