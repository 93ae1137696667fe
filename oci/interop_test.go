package oci_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2"

	"github.com/sysext/sysext/extension"
	"github.com/sysext/sysext/internal/testenv"
	"github.com/sysext/sysext/oci"
	"github.com/sysext/sysext/oci/ocitest"
)

func runTool(t *testing.T, dir, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(testenv.RequireTool(t, name), args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
	return string(out)
}

func sameFile(t *testing.T, a, b string) {
	t.Helper()
	x, err := os.ReadFile(a)
	if err != nil {
		t.Fatal(err)
	}
	y, err := os.ReadFile(b)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(x, y) {
		t.Fatalf("%s and %s differ", a, b)
	}
}

// The real distribution registry and the real ORAS CLI: oras pulls what we
// push byte for byte, and we fetch what oras pushes, plain and Kairos-typed.
func TestORASInterop(t *testing.T) {
	testenv.RequireTool(t, "oras")
	reg := ocitest.StartDistribution(t)
	ctx := context.Background()
	amd := ocitest.Squashfs(t, ocitest.Meta("hello", "1.0", "x86-64"), []byte("amd"))
	arm := ocitest.Squashfs(t, ocitest.Meta("hello", "1.0", "arm64"), []byte("arm"))
	tg, ref := reg.Open(t, "ext/hello:1.0")
	if _, err := oci.Push(ctx, tg, ref, []string{amd, arm}, oci.PushOptions{}); err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	runTool(t, out, "oras", "pull", "--plain-http", "--platform", "linux/arm64", ref.String(), "-o", out)
	sameFile(t, arm, filepath.Join(out, "hello-1.0-arm64.raw"))

	// oras push file.raw: a plain artifact, layer type ...tar.
	src := t.TempDir()
	img := ocitest.Squashfs(t, ocitest.Meta("plain", "2", "x86-64"), []byte("plain"))
	if err := os.Link(img, filepath.Join(src, "plain.raw")); err != nil {
		t.Fatal(err)
	}
	runTool(t, src, "oras", "push", "--plain-http", reg.Ref("ext/plain:2"), "plain.raw")
	runTool(t, src, "oras", "push", "--plain-http", "--artifact-type", oci.MediaTypeKairos, reg.Ref("ext/kairos:2"), "plain.raw:"+oci.MediaTypeKairos)
	for repo, kind := range map[string]oci.Kind{"ext/plain:2": oci.KindPlain, "ext/kairos:2": oci.KindKairos} {
		tg, ref := reg.Open(t, repo)
		r, err := oci.Resolve(ctx, tg, ref, "")
		if err != nil {
			t.Fatal(err)
		}
		if r.Kind != kind || r.FileName != "plain.raw" {
			t.Fatalf("%s: kind %s, file %s", repo, r.Kind, r.FileName)
		}
		dir := testenv.TempDirNoLeak(t, ".#")
		d, err := oci.Download(ctx, tg, &r.Entry, oci.DownloadOptions{Dir: dir})
		if err != nil {
			t.Fatal(err)
		}
		sameFile(t, img, d.Path)
	}
}

// pushReferrer attaches an artifact to subject the OCI 1.1 way.
func pushReferrer(t *testing.T, tg oras.Target, subject ocispec.Descriptor, artifactType string) ocispec.Descriptor {
	t.Helper()
	ctx := context.Background()
	ld, err := oras.PushBytes(ctx, tg, "application/vnd.test.sig", []byte("signature of "+subject.Digest.String()))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := oras.PushBytes(ctx, tg, ocispec.MediaTypeEmptyJSON, []byte("{}")); err != nil {
		t.Fatal(err)
	}
	cfg := ocispec.DescriptorEmptyJSON
	cfg.Data = nil
	m := ocispec.Manifest{
		Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest,
		ArtifactType: artifactType, Config: cfg, Layers: []ocispec.Descriptor{ld}, Subject: &subject,
	}
	b, _ := json.Marshal(m)
	d, err := oras.PushBytes(ctx, tg, ocispec.MediaTypeImageManifest, b)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func referrers(t *testing.T, tg oci.Target, d ocispec.Descriptor) []ocispec.Descriptor {
	t.Helper()
	var out []ocispec.Descriptor
	if err := tg.Referrers(context.Background(), d, "", func(r []ocispec.Descriptor) error {
		out = append(out, r...)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// withoutChunkIndex drops the chunk index referrers push attaches.
func withoutChunkIndex(rs []ocispec.Descriptor) []ocispec.Descriptor {
	var out []ocispec.Descriptor
	for _, r := range rs {
		if r.ArtifactType != oci.ArtifactTypeChunkIndex {
			out = append(out, r)
		}
	}
	return out
}

// Copy carries the whole index, referrers of the index and of each
// manifest (push's chunk indexes among them, so mirrors serve deltas), and
// cosign tags, through olareg (referrers API) → distribution (fallback
// tags) → OCI layout → olareg.
func TestCopyWithReferrers(t *testing.T) {
	ctx := context.Background()
	src := ocitest.NewOlareg(t)
	amd := ocitest.Squashfs(t, ocitest.Meta("hello", "1.0", "x86-64"), []byte("amd"))
	arm := ocitest.Squashfs(t, ocitest.Meta("hello", "1.0", "arm64"), []byte("arm"))
	stg, sref := src.Open(t, "ext/hello:1.0")
	res, err := oci.Push(ctx, stg, sref, []string{amd, arm}, oci.PushOptions{})
	if err != nil {
		t.Fatal(err)
	}
	perArch := res.Manifests[1].Descriptor
	perArch.Platform = nil
	sigIdx := pushReferrer(t, stg, res.Index, "application/vnd.test.signature")
	sigArm := pushReferrer(t, stg, perArch, "application/vnd.test.signature")
	// A cosign v2 style tag on the amd64 manifest.
	cosignTag := "sha256-" + res.Manifests[0].Descriptor.Digest.Encoded() + ".sig"
	pushRaw(t, stg, cosignTag, []byte("cosign payload"), "application/vnd.dev.cosign.simplesigning.v1+json", "", nil, nil)

	hops := []func() (oci.Target, oci.Reference){
		func() (oci.Target, oci.Reference) {
			testenv.RequireTool(t, "registry")
			return ocitest.StartDistribution(t).Open(t, "mirror/hello:1.0")
		},
		func() (oci.Target, oci.Reference) { return ocitest.OpenLayout(t, "1.0") },
		func() (oci.Target, oci.Reference) { return ocitest.NewOlareg(t).Open(t, "again/hello:1.0") },
	}
	from, fromRef := stg, sref
	for i, hop := range hops {
		dst, dref := hop()
		cr, err := oci.Copy(ctx, from, fromRef, dst, dref, oci.CopyOptions{})
		if err != nil {
			t.Fatalf("hop %d: %v", i, err)
		}
		if cr.Root.Digest != res.Index.Digest || len(cr.Referrers) != 4 || len(cr.Tags) != 1 {
			t.Fatalf("hop %d: root %s, %d referrers, tags %v", i, cr.Root.Digest, len(cr.Referrers), cr.Tags)
		}
		for j, arch := range []string{"x86-64", "arm64"} {
			r, err := oci.Resolve(ctx, dst, dref, extension.Arch(arch))
			if err != nil {
				t.Fatalf("hop %d: %s: %v", i, arch, err)
			}
			if _, _, err := oci.FindChunkIndex(ctx, dst, &r.Entry); err != nil || res.Manifests[j].ChunkIndex.Digest == "" {
				t.Fatalf("hop %d: %s: chunk index: %v", i, arch, err)
			}
		}
		if r := referrers(t, dst, res.Index); len(r) != 1 || r[0].Digest != sigIdx.Digest {
			t.Fatalf("hop %d: index referrers %v", i, r)
		}
		if r := withoutChunkIndex(referrers(t, dst, perArch)); len(r) != 1 || r[0].Digest != sigArm.Digest {
			t.Fatalf("hop %d: arm64 referrers %v", i, r)
		}
		if _, err := dst.Resolve(ctx, cosignTag); err != nil {
			t.Fatalf("hop %d: cosign tag: %v", i, err)
		}
		if a, err := oci.ListAttached(ctx, dst, res.Manifests[0].Descriptor); err != nil || len(a.Tags) != 1 || len(withoutChunkIndex(a.Referrers)) != 0 {
			t.Fatalf("hop %d: attached to amd64: %+v %v", i, a, err)
		}
		if a, err := oci.ListAttached(ctx, dst, perArch); err != nil || len(a.Referrers) != 2 || withoutChunkIndex(a.Referrers)[0].ArtifactType != "application/vnd.test.signature" {
			t.Fatalf("hop %d: attached to arm64: %+v %v", i, a, err)
		}
		from, fromRef = dst, dref
	}
}
