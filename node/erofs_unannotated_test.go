package node

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/content"

	"github.com/sysext/sysext/activate"
	"github.com/sysext/sysext/builder"
	"github.com/sysext/sysext/extension"
	"github.com/sysext/sysext/internal/testenv"
	"github.com/sysext/sysext/oci"
	"github.com/sysext/sysext/oci/ocitest"
)

// erofsImage builds EROFS extension NAME VERSION compressed with alg
// (erofs-utils 1.8): 1 MiB of hex text, which compresses about by half.
func erofsImage(t *testing.T, name, version, alg string) string {
	t.Helper()
	tree := t.TempDir()
	data := []byte(hex.EncodeToString(blob(512<<10, uint64(len(version)+len(alg)))))
	must(t, os.MkdirAll(filepath.Join(tree, "usr/share", name), 0o755))
	must(t, os.WriteFile(filepath.Join(tree, "usr/share", name, "data"), data, 0o644))
	return buildEROFS(t, tree, name, version, alg)
}

// buildEROFS builds tree as EROFS extension NAME VERSION compressed with
// alg, reproducibly, and checks the image says alg.
func buildEROFS(t *testing.T, tree, name, version, alg string) string {
	t.Helper()
	res, err := builder.Build(context.Background(), builder.Options{
		Tree: tree, Meta: meta(name, version), Format: builder.EROFS, Compression: alg,
		Output: filepath.Join(t.TempDir(), extension.FileName(name, version, extension.HostArch())), SourceDateEpoch: 1700000000,
	})
	must(t, err)
	if !slices.Equal(res.Compression, []string{alg}) {
		t.Fatalf("built with %s, the image says %v", alg, res.Compression)
	}
	return res.Path
}

// pushUnannotated tags at repoTag img as a sysext manifest without the
// compression annotation, as a sysext that predates it pushed: push's
// manifest with that one key taken out, tagged directly.
func pushUnannotated(t *testing.T, reg *deltaReg, repoTag, img string) {
	t.Helper()
	pushed := pushWith(t, reg.Ref(repoTag), oci.PushOptions{NoChunkIndex: true}, img)
	tg, ref := reg.Open(t, repoTag)
	b, err := content.FetchAll(context.Background(), tg, pushed.Manifests[0].Descriptor)
	must(t, err)
	var m ocispec.Manifest
	must(t, json.Unmarshal(b, &m))
	if m.Annotations[oci.AnnotationCompression] == "" {
		t.Fatalf("push wrote no %s", oci.AnnotationCompression)
	}
	delete(m.Annotations, oci.AnnotationCompression)
	data, err := os.ReadFile(img)
	must(t, err)
	ocitest.PushRaw(t, tg, ref.Tag, data, m.Layers[0].MediaType, m.ArtifactType, m.Layers[0].Annotations, m.Annotations)
}

// An lzma EROFS image whose manifest does not name its compressor (pushed
// before the annotation existed, or by another tool) is judged by its own
// superblock: read ahead with one Range request of the first 4 KiB when
// the manifest says EROFS, so a kernel configuration without
// CONFIG_EROFS_FS_ZIP_LZMA refuses it (--strict: a test node's root is
// not "/", so the finding is a warning) before the image is downloaded;
// from the downloaded file, before anything is activated, when the
// registry ignores Range or the manifest does not say EROFS, and from the
// stored file when the store holds the image already. Either way the
// active version stays and no partial download is left.
func TestEROFSCompressorUnannotated(t *testing.T) {
	t.Setenv("PATH", testenv.TrixieBin(t)+string(os.PathListSeparator)+os.Getenv("PATH"))
	reg := newDeltaReg(t)
	ctx := context.Background()
	v1, v2 := erofsImage(t, "z", "1.0", "lz4"), erofsImage(t, "z", "2.0", "lzma")
	cfg := filepath.Join(t.TempDir(), "config")
	must(t, os.WriteFile(cfg, []byte("CONFIG_EROFS_FS=y\nCONFIG_EROFS_FS_ZIP=y\n"), 0o644))
	sys := activate.System{KernelConfig: cfg, SystemdVersion: 257}
	const cause = "z: the kernel cannot read lzma EROFS images: CONFIG_EROFS_FS_ZIP_LZMA is not set in "
	root := nodeRoot(t, debianRelease)
	o := testNode(root).opts
	o.Preflighter = &ActivatePreflight{Strict: true, System: sys}
	strict := New(o)
	push(t, reg.Ref("sysext/z:1"), v1)
	if _, err := strict.Pull(ctx, PullRequest{Ref: reg.Ref("sysext/z:1")}); err != nil {
		t.Fatalf("pull of the lz4 image: %v", err)
	}
	checkActive(t, root, "z", v1)
	storeDir := filepath.Join(root, "var/lib/sysext/store/z")
	refused := func(t *testing.T, req PullRequest) {
		t.Helper()
		_, err := strict.Pull(ctx, req)
		if err == nil || !strings.Contains(err.Error(), cause+cfg) || !strings.Contains(err.Error(), "--compression lz4hc") || strings.Contains(err.Error(), "\n") {
			t.Fatalf("pull --strict = %v", err)
		}
		t.Logf("refused: %v", err)
		checkActive(t, root, "z", v1)
		if files := storedFiles(t, storeDir); !slices.Equal(files, []string{filepath.Base(v1)}) {
			t.Fatalf("store after the refusal: %v", files)
		}
	}

	// The subtests run in order on the one node: each starts where the
	// one before left it.
	pushUnannotated(t, reg, "sysext/z:2", v2)
	t.Run("superblock read ahead", func(t *testing.T) {
		reg.misbehave(nil)
		refused(t, PullRequest{Ref: reg.Ref("sysext/z:2")})
		reg.served.Settle()
		if sent, rg := reg.served.Bytes(), reg.served.Ranges(); sent != 4096 || !slices.Equal(rg, []string{"bytes=0-4095"}) {
			t.Fatalf("the registry sent %d blob bytes (ranges %q) of the %d-byte image before the refusal, want its first 4096", sent, rg, size(t, v2))
		}
	})
	t.Run("registry ignores Range", func(t *testing.T) {
		reg.misbehave(ocitest.IgnoreRange(-1))
		refused(t, PullRequest{Ref: reg.Ref("sysext/z:2")})
		reg.served.Settle()
		// The range's answer (the whole blob) is dropped unread; the image
		// is downloaded once and judged by its file.
		if n := reg.served.Requests(); n != 2 {
			t.Fatalf("%d blob requests, want the range and one download", n)
		}
		t.Logf("sent %d blob bytes for a %d-byte image", reg.served.Bytes(), size(t, v2))
	})
	t.Run("oras push", func(t *testing.T) {
		// Kairos-style: no annotations, a media type that names no
		// filesystem.
		reg.misbehave(nil)
		data, err := os.ReadFile(v2)
		must(t, err)
		tg, _ := reg.Open(t, "sysext/z:kairos")
		ocitest.PushRaw(t, tg, "kairos", data, oci.MediaTypeKairos, oci.MediaTypeKairos, map[string]string{ocispec.AnnotationTitle: filepath.Base(v2)}, nil)
		refused(t, PullRequest{Ref: reg.Ref("sysext/z:kairos"), Name: "z"})
		reg.served.Settle()
		if sent := reg.served.Bytes(); sent != size(t, v2) {
			t.Fatalf("sent %d, want the image once (%d)", sent, size(t, v2))
		}
	})
	t.Run("warning", func(t *testing.T) {
		reg.misbehave(nil)
		var log bytes.Buffer
		o := o
		o.Preflighter = &ActivatePreflight{Log: &log, System: sys}
		if _, err := New(o).Pull(ctx, PullRequest{Ref: reg.Ref("sysext/z:2")}); err != nil {
			t.Fatalf("pull: %v\n%s", err, log.String())
		}
		if n := strings.Count(log.String(), "warning: "+cause+cfg); n != 1 {
			t.Fatalf("%d warnings about lzma, want 1:\n%s", n, log.String())
		}
		checkActive(t, root, "z", v2)
	})
	t.Run("stored", func(t *testing.T) {
		// Back to 1.0; 2.0 stays stored. A pull of 2.0 from a registry
		// that ignores Range takes the stored file, judged by its own
		// superblock: refused without a download.
		o := o
		o.AllowDowngrade = true
		if _, err := New(o).Pull(ctx, PullRequest{Ref: reg.Ref("sysext/z:1")}); err != nil {
			t.Fatal(err)
		}
		checkActive(t, root, "z", v1)
		reg.misbehave(ocitest.IgnoreRange(-1))
		_, err := strict.Pull(ctx, PullRequest{Ref: reg.Ref("sysext/z:2")})
		if err == nil || !strings.Contains(err.Error(), cause+cfg) {
			t.Fatalf("pull --strict of the stored 2.0 = %v", err)
		}
		checkActive(t, root, "z", v1)
		reg.served.Settle()
		if n := reg.served.Requests(); n != 1 {
			t.Fatalf("%d blob requests, want the range only", n)
		}
	})
}
