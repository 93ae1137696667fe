package fsimage_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sysext/sysext/fsimage"
)

// ReadFile reads any regular file of an image (a confext's etc/ files),
// bounded, never following a symlink, in every reader.
func TestReadFile(t *testing.T) {
	tree := t.TempDir()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(tree, "etc/extension-release.d"), 0o755))
	must(os.WriteFile(filepath.Join(tree, "etc/extension-release.d/extension-release.c"), []byte("ID=_any\n"), 0o644))
	must(os.WriteFile(filepath.Join(tree, "etc/big"), []byte(strings.Repeat("x", 5000)), 0o644))
	must(os.Symlink("/etc/passwd", filepath.Join(tree, "etc/link")))
	images := map[string]string{
		"squashfs zstd":                mksquashfs(t, tree, "-comp", "zstd"),
		"squashfs lz4":                 mksquashfs(t, tree, "-comp", "lz4"),
		"squashfs xz bcj (unsquashfs)": mksquashfs(t, tree, "-comp", "xz", "-Xbcj", "x86"),
		"erofs":                        mkfsErofs(t, tree),
	}
	ctx := context.Background()
	for name, img := range images {
		t.Run(name, func(t *testing.T) {
			if b, err := fsimage.ReadFile(ctx, img, "etc/extension-release.d/extension-release.c", 100); err != nil || string(b) != "ID=_any\n" {
				t.Fatalf("read %q %v", b, err)
			}
			for file, want := range map[string]string{"etc/big": "more than", "etc/link": "", "etc/missing": "", "etc": ""} {
				if _, err := fsimage.ReadFile(ctx, img, file, 1000); err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), img) {
					t.Errorf("%s: want an error naming the image (%q), got %v", file, want, err)
				}
			}
		})
	}
	text := filepath.Join(t.TempDir(), "text")
	must(os.WriteFile(text, []byte(strings.Repeat("not an image\n", 1000)), 0o644))
	if _, err := fsimage.ReadFile(ctx, text, "etc/a", 10); !errors.Is(err, fsimage.ErrUnknownFormat) {
		t.Errorf("text file: %v", err)
	}
}
