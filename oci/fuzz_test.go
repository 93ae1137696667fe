package oci_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"strconv"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/errdef"

	"github.com/sysext/sysext/extension"
	"github.com/sysext/sysext/oci"
	"github.com/sysext/sysext/oci/ocitest"
)

// rawTarget answers like a registry that serves any bytes: the tag "t"
// resolves to root, and blobs are fetched by digest whatever they hold.
type rawTarget struct {
	root  ocispec.Descriptor
	blobs map[digest.Digest][]byte
}

func (r *rawTarget) Resolve(_ context.Context, ref string) (ocispec.Descriptor, error) {
	if ref != "t" {
		return ocispec.Descriptor{}, errdef.ErrNotFound
	}
	return r.root, nil
}

func (r *rawTarget) Fetch(_ context.Context, d ocispec.Descriptor) (io.ReadCloser, error) {
	b, ok := r.blobs[d.Digest]
	if !ok {
		return nil, errdef.ErrNotFound
	}
	return io.NopCloser(bytes.NewReader(b)), nil
}

func (r *rawTarget) Exists(_ context.Context, d ocispec.Descriptor) (bool, error) {
	_, ok := r.blobs[d.Digest]
	return ok, nil
}

func (r *rawTarget) Push(context.Context, ocispec.Descriptor, io.Reader) error {
	return errors.New("read-only")
}
func (r *rawTarget) Tag(context.Context, ocispec.Descriptor, string) error {
	return errors.New("read-only")
}
func (r *rawTarget) Predecessors(context.Context, ocispec.Descriptor) ([]ocispec.Descriptor, error) {
	return nil, nil
}
func (r *rawTarget) Referrers(context.Context, ocispec.Descriptor, string, func([]ocispec.Descriptor) error) error {
	return nil
}
func (r *rawTarget) Tags(context.Context, string, func([]string) error) error { return nil }

// FuzzResolve feeds the manifest and index parsers (Resolve, Describe)
// what a registry could answer: a root manifest or index, and a second
// manifest the index may name (@CHILD@ and @CHILDSIZE@ in the root are
// replaced by its digest and size, so the fuzzer reaches it). A success
// must give a safe file name, a valid layer digest and a known kind.
func FuzzResolve(f *testing.F) {
	ann := oci.Annotations(ocitest.Meta("hello", "1.0", "x86-64"))
	manifest := func(layerType string, layerAnn, ann map[string]string) []byte {
		m := ocispec.Manifest{
			Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest,
			ArtifactType: oci.ArtifactType, Config: ocispec.DescriptorEmptyJSON, Annotations: ann,
			Layers: []ocispec.Descriptor{{MediaType: layerType, Digest: digest.FromString("image"), Size: 5, Annotations: layerAnn}},
		}
		m.Config.Data = nil
		b, _ := json.Marshal(m)
		return b
	}
	sysext := manifest(oci.MediaTypeSquashfs, nil, ann)
	index := []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[` +
		`{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"@CHILD@","size":@CHILDSIZE@,"platform":{"os":"linux","architecture":"amd64"}},` +
		`{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"@CHILD@","size":@CHILDSIZE@}]}`)
	f.Add(sysext, []byte(nil), false)
	f.Add(manifest(oci.MediaTypeKairos, map[string]string{oci.AnnotationTitle: "k.raw"}, nil), []byte(nil), false)
	f.Add(manifest("application/octet-stream", map[string]string{oci.AnnotationTitle: "../../etc/passwd"}, nil), []byte(nil), false)
	f.Add(index, sysext, true)
	f.Add(index, manifest(oci.MediaTypeEROFS, nil, map[string]string{oci.AnnotationName: "x", oci.AnnotationArchitecture: "arm64"}), true)
	f.Add([]byte(`{"manifests":[{}]}`), []byte(`{"layers":[{"size":-1}]}`), true)

	f.Fuzz(func(t *testing.T, root, child []byte, isIndex bool) {
		ctx := context.Background()
		childDesc := content.NewDescriptorFromBytes(ocispec.MediaTypeImageManifest, child)
		root = bytes.ReplaceAll(root, []byte("@CHILD@"), []byte(childDesc.Digest))
		root = bytes.ReplaceAll(root, []byte("@CHILDSIZE@"), []byte(strconv.Itoa(len(child))))
		mt := ocispec.MediaTypeImageManifest
		if isIndex {
			mt = ocispec.MediaTypeImageIndex
		}
		rootDesc := content.NewDescriptorFromBytes(mt, root)
		store := &rawTarget{root: rootDesc, blobs: map[digest.Digest][]byte{childDesc.Digest: child, rootDesc.Digest: root}}
		ref, err := oci.ParseReference("127.0.0.1:5000/fuzz:t")
		if err != nil {
			t.Fatal(err)
		}
		check := func(e *oci.Entry) {
			if err := extension.ValidateFileName(e.FileName); err != nil {
				t.Fatalf("entry file name %q: %v", e.FileName, err)
			}
			if err := e.Layer.Digest.Validate(); err != nil || e.Layer.Size < 0 {
				t.Fatalf("entry layer %+v", e.Layer)
			}
			if e.Kind != oci.KindSysext && e.Kind != oci.KindKairos && e.Kind != oci.KindPlain {
				t.Fatalf("entry kind %q", e.Kind)
			}
		}
		for _, arch := range []string{"x86-64", "arm64"} {
			r, err := oci.Resolve(ctx, store, ref, extension.Arch(arch))
			if err == nil {
				check(&r.Entry)
			} else if strings.Contains(err.Error(), "\n") {
				t.Fatalf("multi-line error %q", err)
			}
		}
		if a, err := oci.Describe(ctx, store, ref); err == nil {
			for i := range a.Entries {
				check(&a.Entries[i])
			}
		}
	})
}

// FuzzParseReference: references come from flags, declarations and
// policies. One that parses formats back to itself (String's promise) and
// names a tag or a digest; nothing panics.
func FuzzParseReference(f *testing.F) {
	for _, s := range []string{
		"ghcr.io/acme/ext/docker:24", "localhost:5000/a/b@sha256:" + strings.Repeat("0", 64),
		"oci:/srv/images:docker-24", "oci:rel/dir@sha256:" + strings.Repeat("a", 64), "[::1]:5000/x:y",
		"docker.io/library/x:1", "a/b", "oci:", "ghcr.io/A/b:1", "ghcr.io/a/b:" + strings.Repeat("t", 200),
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ref, err := oci.ParseReference(s)
		if err != nil {
			if !errors.Is(err, oci.ErrInvalidReference) {
				t.Fatalf("%q: %v does not wrap ErrInvalidReference", s, err)
			}
			return
		}
		if ref.Tag == "" && ref.Digest == "" {
			t.Fatalf("%q parsed to %+v: neither tag nor digest", s, ref)
		}
		again, err := oci.ParseReference(ref.String())
		if err != nil || again != ref {
			t.Fatalf("%q -> %+v -> %q -> %+v, %v", s, ref, ref.String(), again, err)
		}
	})
}
