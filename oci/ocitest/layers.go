package ocitest

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/content"
)

// Layer is a gzip-compressed tar layer and the digest of its uncompressed
// tar (its DiffID).
type Layer struct {
	Blob   []byte
	DiffID digest.Digest
}

// TarGzLayer makes a layer of entries (name, body; a name ending in / is a
// directory) with mode 0755 and the given modification time.
func TarGzLayer(t testing.TB, modTime time.Time, entries ...[2]string) Layer {
	t.Helper()
	var tb bytes.Buffer
	tw := tar.NewWriter(&tb)
	for _, e := range entries {
		h := &tar.Header{Name: e[0], Mode: 0o755, Typeflag: tar.TypeReg, Size: int64(len(e[1])), ModTime: modTime}
		if strings.HasSuffix(e[0], "/") {
			h.Typeflag, h.Size = tar.TypeDir, 0
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		tw.Write([]byte(e[1]))
	}
	tw.Close()
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(tb.Bytes())
	zw.Close()
	return Layer{gz.Bytes(), digest.FromBytes(tb.Bytes())}
}

// PushImage pushes an image made of cfg (its RootFS is filled in here) and
// the gzip layers to repoTag, skipping blobs the registry already has, and
// returns its reference.
func PushImage(t testing.TB, reg *Registry, repoTag string, cfg ocispec.Image, layers ...Layer) string {
	t.Helper()
	tg, ref := reg.Open(t, repoTag)
	ctx := context.Background()
	put := func(mt string, b []byte) ocispec.Descriptor {
		desc := content.NewDescriptorFromBytes(mt, b)
		if ok, _ := tg.Exists(ctx, desc); ok {
			return desc
		}
		if err := tg.Push(ctx, desc, bytes.NewReader(b)); err != nil {
			t.Fatal(err)
		}
		return desc
	}
	cfg.RootFS = ocispec.RootFS{Type: "layers"}
	m := ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest}
	for _, l := range layers {
		m.Layers = append(m.Layers, put(ocispec.MediaTypeImageLayerGzip, l.Blob))
		cfg.RootFS.DiffIDs = append(cfg.RootFS.DiffIDs, l.DiffID)
	}
	cb, _ := json.Marshal(cfg)
	m.Config = put(ocispec.MediaTypeImageConfig, cb)
	mb, _ := json.Marshal(m)
	if err := tg.Tag(ctx, put(ocispec.MediaTypeImageManifest, mb), ref.Tag); err != nil {
		t.Fatal(err)
	}
	return reg.Ref(repoTag)
}
