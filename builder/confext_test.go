package builder_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sysext/sysext/builder"
	"github.com/sysext/sysext/extension"
	"github.com/sysext/sysext/fsimage"
	"github.com/sysext/sysext/internal/testenv"
)

func confextTree(t *testing.T, files map[string]string) string {
	t.Helper()
	tree := t.TempDir()
	for p, c := range files {
		full := filepath.Join(tree, filepath.FromSlash(p))
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return tree
}

var confextMeta = extension.Metadata{Name: "tool", Version: "1", Arch: "x86-64", ID: "fedora", VersionID: "42"}

// A confext: etc/ only, its extension-release under etc/, byte for byte
// what the build says, in both formats; the tree is not changed.
func TestBuildConfext(t *testing.T) {
	for _, format := range []builder.ImageFormat{builder.Squashfs, builder.EROFS} {
		t.Run(string(format), func(t *testing.T) {
			tool := "mksquashfs"
			if format == builder.EROFS {
				tool = "mkfs.erofs"
			}
			testenv.RequireTool(t, tool)
			tree := confextTree(t, map[string]string{"etc/tool.conf": "answer=42\n", "etc/tool.d/10-x.conf": "x\n"})
			out := filepath.Join(testenv.TempDirNoLeak(t, ".#"), "tool-conf.raw")
			res, err := builder.Build(context.Background(), builder.Options{Kind: builder.KindConfext, Tree: tree, Meta: confextMeta, Format: format, Output: out, Digest: true})
			if err != nil {
				t.Fatal(err)
			}
			if res.Path != out || res.Format != format || !strings.HasPrefix(res.Digest, "sha256:") {
				t.Fatalf("result %+v", res)
			}
			want := "ID=fedora\nVERSION_ID=42\n"
			rel, err := fsimage.ReadFile(context.Background(), out, "etc/extension-release.d/extension-release.tool", extension.MaxReleaseSize)
			if err != nil || string(rel) != want {
				t.Fatalf("the confext's extension-release %q (%v), want %q", rel, err, want)
			}
			conf, err := fsimage.ReadFile(context.Background(), out, "etc/tool.d/10-x.conf", 100)
			if err != nil || string(conf) != "x\n" {
				t.Fatalf("etc/tool.d/10-x.conf: %q %v", conf, err)
			}
			// Not a system extension: no usr/lib/extension-release.d.
			if _, err := fsimage.OpenMetadata(context.Background(), out); !errors.Is(err, fsimage.ErrNoRelease) {
				t.Fatalf("a confext read as a system extension: %v", err)
			}
			if _, err := os.Stat(filepath.Join(tree, "etc/extension-release.d")); !os.IsNotExist(err) {
				t.Fatalf("the build wrote into the tree: %v", err)
			}
			// CONFEXT_LEVEL instead of VERSION_ID.
			m := confextMeta
			m.VersionID, m.SysextLevel = "", "1.0"
			out2 := filepath.Join(filepath.Dir(out), "level.raw")
			if _, err := builder.Build(context.Background(), builder.Options{Kind: builder.KindConfext, Tree: tree, Meta: m, Format: format, Output: out2}); err != nil {
				t.Fatal(err)
			}
			rel, err = fsimage.ReadFile(context.Background(), out2, "etc/extension-release.d/extension-release.tool", extension.MaxReleaseSize)
			if err != nil || string(rel) != "ID=fedora\nCONFEXT_LEVEL=1.0\n" {
				t.Fatalf("CONFEXT_LEVEL: %q %v", rel, err)
			}
		})
	}
}

// Reproducible like a system extension: two builds, same bytes.
func TestBuildConfextReproducible(t *testing.T) {
	testenv.RequireTool(t, "mksquashfs")
	dir := testenv.TempDirNoLeak(t, ".#")
	var images [][]byte
	for i, tree := range []string{confextTree(t, map[string]string{"etc/a.conf": "a"}), confextTree(t, map[string]string{"etc/a.conf": "a"})} {
		out := filepath.Join(dir, string(rune('a'+i))+".raw")
		if _, err := builder.Build(context.Background(), builder.Options{Kind: builder.KindConfext, Tree: tree, Meta: confextMeta, Output: out}); err != nil {
			t.Fatal(err)
		}
		b, _ := os.ReadFile(out)
		images = append(images, b)
	}
	if !bytes.Equal(images[0], images[1]) {
		t.Fatal("two confext builds of the same tree differ")
	}
}

// Bad confext input: a clear error, nothing written.
func TestBuildConfextRefuses(t *testing.T) {
	testenv.RequireTool(t, "mksquashfs")
	cases := []struct {
		name  string
		files map[string]string
		opts  func(*builder.Options)
		want  string
	}{
		{"usr in a confext", map[string]string{"etc/a": "a", "usr/bin/x": "x"}, nil, "merges only etc/"},
		{"no etc", map[string]string{}, nil, "has no etc/"},
		{"own release file", map[string]string{"etc/extension-release.d/extension-release.tool": "ID=_any\n"}, nil, "remove it from the tree"},
		{"enable", map[string]string{"etc/a": "a"}, func(o *builder.Options) { o.Enable = []string{"x.service"} }, "--enable"},
		{"unknown kind", map[string]string{"etc/a": "a"}, func(o *builder.Options) { o.Kind = "portable" }, "unknown image kind"},
		{"os without version", map[string]string{"etc/a": "a"}, func(o *builder.Options) { o.Meta.VersionID = "" }, "--version-id"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := testenv.TempDirNoLeak(t, ".#")
			o := builder.Options{Kind: builder.KindConfext, Tree: confextTree(t, tc.files), Meta: confextMeta, Output: filepath.Join(dir, "c.raw")}
			if tc.opts != nil {
				tc.opts(&o)
			}
			_, err := builder.Build(context.Background(), o)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("want %q, got %v", tc.want, err)
			}
			if ents, _ := os.ReadDir(dir); len(ents) != 0 {
				t.Fatalf("left %v", ents)
			}
		})
	}
}
