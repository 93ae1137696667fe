package fromimage_test

import (
	"context"
	"encoding/json"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/content"

	"github.com/sysext/sysext/builder"
	"github.com/sysext/sysext/extension"
	"github.com/sysext/sysext/fromimage"
	"github.com/sysext/sysext/fsimage"
	"github.com/sysext/sysext/internal/testenv"
	"github.com/sysext/sysext/oci"
	"github.com/sysext/sysext/oci/ocitest"
)

// A base whose os-release has IMAGE_ID and IMAGE_VERSION: the extension
// built from an image FROM it carries them in its extension-release, and
// push records them as manifest annotations.
func TestBaseImageTravelsToManifest(t *testing.T) {
	testenv.RequireTool(t, "mksquashfs")
	ctx := context.Background()
	reg := ocitest.NewOlareg(t)
	osRelease := "ID=fedora\nVERSION_ID=42\nIMAGE_ID=\"fedora-coreos\"\nIMAGE_VERSION=42.20250101.3.0\n"
	baseLayer := mkLayer(t, d("usr/"), d("usr/lib/"), f("usr/lib/os-release", osRelease), d("usr/bin/"), f("usr/bin/basetool", "base"))
	addLayer := mkLayer(t, d("usr/"), d("usr/bin/"), f("usr/bin/newtool", "#!/bin/sh\necho new\n"))
	baseRef := push(t, reg, "os/coreos:42", "amd64", baseLayer)
	derivedRef := push(t, reg, "os/derived:42", "amd64", baseLayer, addLayer)
	img, _ := source(t, derivedRef)
	base, _ := source(t, baseRef)
	tree := t.TempDir()
	res, err := fromimage.Prepare(ctx, tree, fromimage.Options{Image: img, Base: base, Arch: "x86-64", BaseOSRelease: true})
	if err != nil {
		t.Fatal(err)
	}
	fields, err := fromimage.BindToBaseImage(tree, "newtool", res.OSRelease)
	if err != nil {
		t.Fatal(err)
	}
	if fields.Get(extension.FieldImageID) != "fedora-coreos" || fields.Get(extension.FieldImageVersion) != "42.20250101.3.0" {
		t.Fatalf("recorded %v", fields.Map())
	}
	out := filepath.Join(testenv.TempDirNoLeak(t, ".#"), "newtool.raw")
	built, err := builder.Build(ctx, builder.Options{Tree: tree, Output: out, Compression: "lz4",
		Meta: extension.Metadata{Name: "newtool", Version: "1.0", Arch: "x86-64", ID: res.OSRelease.Get("ID"), VersionID: res.OSRelease.Get("VERSION_ID")}})
	if err != nil {
		t.Fatal(err)
	}
	info, err := fsimage.OpenMetadata(ctx, built.Path)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"IMAGE_ID=fedora-coreos\n", "IMAGE_VERSION=42.20250101.3.0\n", "SYSEXT_VERSION_ID=1.0\n", "VERSION_ID=42\n"} {
		if !strings.Contains(string(info.ReleaseBytes), want) {
			t.Fatalf("the image's extension-release lacks %q:\n%s", want, info.ReleaseBytes)
		}
	}
	if info.Meta.Version != "1.0" {
		t.Fatalf("the extension's version is %q: IMAGE_VERSION must not become it", info.Meta.Version)
	}

	tg, ref := reg.Open(t, "ext/newtool:1.0")
	if _, err := oci.Push(ctx, tg, ref, []string{built.Path}, oci.PushOptions{}); err != nil {
		t.Fatal(err)
	}
	r, err := oci.Resolve(ctx, tg, ref, "x86-64")
	if err != nil {
		t.Fatal(err)
	}
	// Read the manifest as a registry client would, not through our types.
	rc, err := tg.Fetch(ctx, r.Descriptor)
	if err != nil {
		t.Fatal(err)
	}
	body, err := content.ReadAll(rc, r.Descriptor)
	rc.Close()
	if err != nil {
		t.Fatal(err)
	}
	var m ocispec.Manifest
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatal(err)
	}
	if got := m.Annotations["org.sysext.extension.image-id"]; got != "fedora-coreos" {
		t.Errorf("manifest annotation image-id = %q\n%s", got, body)
	}
	if got := m.Annotations["org.sysext.extension.image-version"]; got != "42.20250101.3.0" {
		t.Errorf("manifest annotation image-version = %q\n%s", got, body)
	}
	// The node's download check agrees with what push recorded.
	if _, err := oci.Download(ctx, tg, &r.Entry, oci.DownloadOptions{Dir: testenv.TempDirNoLeak(t, ".#")}); err != nil {
		t.Fatal(err)
	}
}

func TestBindToBaseImageRefusals(t *testing.T) {
	good := release(map[string]string{"ID": "fedora", "VERSION_ID": "42", "IMAGE_ID": "coreos", "IMAGE_VERSION": "42.1"})
	relPath := filepath.FromSlash(extension.ReleasePath("x"))

	// No IMAGE_* in the base: nothing written.
	tree := t.TempDir()
	fields, err := fromimage.BindToBaseImage(tree, "x", release(map[string]string{"ID": "debian", "VERSION_ID": "12"}))
	if err != nil || len(fields.Keys()) != 0 {
		t.Fatalf("%v %v", fields, err)
	}
	if _, err := os.Lstat(filepath.Join(tree, "usr")); !os.IsNotExist(err) {
		t.Fatalf("wrote into the tree without IMAGE_* fields: %v", err)
	}

	for _, tc := range []struct {
		name  string
		osr   *extension.Release
		setup func(t *testing.T, tree string)
		want  string
	}{
		{"bad IMAGE_ID", release(map[string]string{"IMAGE_ID": "core os"}), nil, `IMAGE_ID="core os"`},
		{"bad IMAGE_VERSION", release(map[string]string{"IMAGE_VERSION": "1\n2"}), nil, "IMAGE_VERSION="},
		{"image disagrees", good, func(t *testing.T, tree string) {
			bindWrite(t, filepath.Join(tree, relPath), "IMAGE_ID=other\n")
		}, "sets IMAGE_ID=other but its base has IMAGE_ID=coreos"},
		{"symlinked release", good, func(t *testing.T, tree string) {
			bindMust(t, os.MkdirAll(filepath.Dir(filepath.Join(tree, relPath)), 0o755))
			bindMust(t, os.Symlink("/etc/passwd", filepath.Join(tree, relPath)))
		}, "not a regular file"},
		{"release dir escapes", good, func(t *testing.T, tree string) {
			bindMust(t, os.MkdirAll(filepath.Join(tree, "usr/lib"), 0o755))
			bindMust(t, os.Symlink(t.TempDir(), filepath.Join(tree, "usr/lib/extension-release.d")))
		}, "escapes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tree := t.TempDir()
			if tc.setup != nil {
				tc.setup(t, tree)
			}
			_, err := fromimage.BindToBaseImage(tree, "x", tc.osr)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("want %q, got %v", tc.want, err)
			}
		})
	}

	// The image's own release file is kept and extended.
	tree = t.TempDir()
	bindWrite(t, filepath.Join(tree, relPath), "# mine\nIMAGE_ID=coreos\nFOO=bar\n")
	if _, err := fromimage.BindToBaseImage(tree, "x", good); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(filepath.Join(tree, relPath))
	rel, err := extension.ParseRelease(b)
	if err != nil || rel.Get("FOO") != "bar" || rel.Get("IMAGE_VERSION") != "42.1" || rel.Get("IMAGE_ID") != "coreos" {
		t.Fatalf("merged file:\n%s (%v)", b, err)
	}
}

func bindWrite(t *testing.T, p, s string) {
	t.Helper()
	bindMust(t, os.MkdirAll(filepath.Dir(p), 0o755))
	bindMust(t, os.WriteFile(p, []byte(s), 0o644))
}

func bindMust(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// release is an os-release holding m (Set in key order, for a stable file).
func release(m map[string]string) *extension.Release {
	r := &extension.Release{}
	for _, k := range slices.Sorted(maps.Keys(m)) {
		r.Set(k, m[k])
	}
	return r
}

// The base's os-release is read as systemd reads it (quotes, escapes,
// continued lines) and bounded: a file of more than 64 KiB is refused, not
// read into memory; one systemd cannot parse is an error naming it.
func TestBaseOSReleaseSyntax(t *testing.T) {
	ctx := context.Background()
	reg := ocitest.NewOlareg(t)
	huge := strings.Repeat("# padding\n", 7000) + "ID=fedora\nVERSION_ID=42\n"
	for _, tc := range []struct {
		name, osRelease, wantVersionID, wantErr string
	}{
		{"continued line", "ID=fedora\nVERSION_ID=4\\\n2\n", "42", ""},
		{"escaped quote", "ID=fedora\nVERSION_ID=\"42\\\"\"\n", `42"`, ""},
		{"huge", huge, "", "usr/lib/os-release is more than 65536 bytes"},
		{"unterminated quote", "ID=fedora\nVERSION_ID=\"42\n", "", "usr/lib/os-release: line 2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			baseLayer := mkLayer(t, d("usr/"), d("usr/lib/"), f("usr/lib/os-release", tc.osRelease))
			addLayer := mkLayer(t, d("usr/"), d("usr/bin/"), f("usr/bin/newtool", "new"))
			img, _ := source(t, push(t, reg, "os/derived:"+strings.ReplaceAll(tc.name, " ", "-"), "amd64", baseLayer, addLayer))
			base, _ := source(t, push(t, reg, "os/base:"+strings.ReplaceAll(tc.name, " ", "-"), "amd64", baseLayer))
			res, err := fromimage.Prepare(ctx, t.TempDir(), fromimage.Options{Image: img, Base: base, Arch: "x86-64", BaseOSRelease: true})
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || strings.Contains(err.Error(), os.TempDir()) {
					t.Fatalf("err %v, want %q (naming the file in the image)", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := res.OSRelease.Get(extension.FieldVersionID); got != tc.wantVersionID {
				t.Fatalf("VERSION_ID %q, want %q", got, tc.wantVersionID)
			}
		})
	}
}
