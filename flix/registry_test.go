package flix

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/sysext/sysext/oci"
	"github.com/sysext/sysext/oci/ocitest"
)

// TestRootfsFromRegistry pushes the multi-layer image (gzip, zstd and
// plain layers with whiteouts, an opaque directory, hard links and
// symlinks) as a multi-platform index to olareg in-process and to the
// distribution registry, and checks the extracted tree exactly.
func TestRootfsFromRegistry(t *testing.T) {
	regs := map[string]func(testing.TB) *ocitest.Registry{
		"olareg":       func(t testing.TB) *ocitest.Registry { return ocitest.NewOlareg(t) },
		"distribution": ocitest.StartDistribution,
	}
	for name, start := range regs {
		t.Run(name, func(t *testing.T) {
			reg := start(t)
			ctx := context.Background()
			tg, ref := reg.Open(t, "images/multi:v1")
			desc := pushImage(t, tg, ocispec.Image{Config: ocispec.ImageConfig{Env: []string{"A=1"}}}, true, multiLayer(t)...)
			if err := tg.Tag(ctx, desc, ref.Tag); err != nil {
				t.Fatal(err)
			}
			// As a user would: a fresh target from the reference.
			tg2, err := oci.Open(ctx, ref, ocitest.TestOptions())
			if err != nil {
				t.Fatal(err)
			}
			root, err := tg2.Resolve(ctx, ref.Reference())
			if err != nil {
				t.Fatal(err)
			}
			dir := filepath.Join(t.TempDir(), "rootfs")
			if _, err := Rootfs(ctx, tg2, root, dir, RootfsOptions{Arch: "x86-64"}); err != nil {
				t.Fatal(err)
			}
			sameTree(t, listTree(t, dir), multiLayerTree)
			if _, err := os.Stat(dir + ConfigSuffix); err != nil {
				t.Fatal(err)
			}
		})
	}
}
