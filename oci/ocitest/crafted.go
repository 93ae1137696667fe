package ocitest

import (
	"context"
	"encoding/json"
	"errors"
	"testing"

	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/errdef"

	"github.com/sysext/sysext/extension"
	"github.com/sysext/sysext/oci"
)

// SysextManifest stores a one-layer sysext manifest for arch (version
// makes each one distinct; the layer is not a real image) and returns its
// descriptor. For tests of what a reader fetches, not of downloads.
func SysextManifest(t testing.TB, tg oras.Target, arch extension.Arch, version string) ocispec.Descriptor {
	t.Helper()
	layer := pushBlob(t, tg, oci.MediaTypeSquashfs, []byte("hsqs not really an image"))
	pushBlob(t, tg, ocispec.MediaTypeEmptyJSON, []byte("{}"))
	m := ocispec.Manifest{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageManifest,
		Config:    ocispec.DescriptorEmptyJSON,
		Layers:    []ocispec.Descriptor{layer},
		Annotations: map[string]string{
			oci.AnnotationName: "crafted", oci.AnnotationVersion: version, oci.AnnotationID: extension.AnyID,
			oci.AnnotationArchitecture: string(arch),
		},
	}
	m.Config.Data = nil
	b, _ := json.Marshal(m)
	return pushBlob(t, tg, ocispec.MediaTypeImageManifest, b)
}

// pushBlob stores b (once: a store that has it already is fine).
func pushBlob(t testing.TB, tg oras.Target, mediaType string, b []byte) ocispec.Descriptor {
	t.Helper()
	d, err := oras.PushBytes(context.Background(), tg, mediaType, b)
	if errors.Is(err, errdef.ErrAlreadyExists) {
		return content.NewDescriptorFromBytes(mediaType, b)
	}
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// Index tags an index listing entries and returns its descriptor.
func Index(t testing.TB, tg oras.Target, tag string, entries []ocispec.Descriptor) ocispec.Descriptor {
	t.Helper()
	b, err := json.Marshal(ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageIndex, Manifests: entries})
	if err != nil {
		t.Fatal(err)
	}
	d, err := oras.TagBytes(context.Background(), tg, ocispec.MediaTypeImageIndex, b, tag)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// OtherArch is an architecture that is not the host's.
func OtherArch() extension.Arch {
	if extension.HostArch() == "arm64" {
		return "x86-64"
	}
	return "arm64"
}

// HugeIndex tags the crafted index of the hostile-input report: n entries
// (20 000 make about 3 MB, under oci.MaxManifestSize), alternating entries
// without platform and entries for another architecture, all naming one
// manifest for another architecture.
func HugeIndex(t testing.TB, tg oras.Target, tag string, n int) ocispec.Descriptor {
	t.Helper()
	foreign := SysextManifest(t, tg, OtherArch(), "1.0")
	arch, variant := OtherArch().OCIPlatform()
	entries := make([]ocispec.Descriptor, n)
	for i := range entries {
		e := foreign
		if i%2 == 1 {
			e.Platform = &ocispec.Platform{OS: "linux", Architecture: arch, Variant: variant}
		}
		entries[i] = e
	}
	return Index(t, tg, tag, entries)
}
