package fsimage_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/sysext/sysext/fsimage"
)

// bigImages builds 1 GiB images (squashfs with zstd metadata, read by the Go
// reader; squashfs lz4, read through unsquashfs; EROFS lz4) from a tree
// of incompressible data plus 5000 small files and the metadata inspect
// reads.
func bigImages(b *testing.B) map[string]string {
	b.Helper()
	for _, tool := range []string{"mksquashfs", "mkfs.erofs"} {
		if _, err := exec.LookPath(tool); err != nil {
			b.Skip(err)
		}
	}
	dir := b.TempDir()
	tree := filepath.Join(dir, "tree")
	rng := rand.New(rand.NewChaCha8([32]byte{2}))
	buf := make([]byte, 8<<20)
	for i := 0; i < 128; i++ { // 128 × 8 MiB = 1 GiB
		for j := range buf {
			buf[j] = byte(rng.Uint32())
		}
		p := filepath.Join(tree, "usr/lib/big", fmt.Sprintf("b%03d", i))
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, buf, 0o644); err != nil {
			b.Fatal(err)
		}
	}
	for i := 0; i < 5000; i++ {
		p := filepath.Join(tree, "usr/share/many", fmt.Sprintf("%02d/f%05d", i/100, i))
		os.MkdirAll(filepath.Dir(p), 0o755)
		os.WriteFile(p, []byte(fmt.Sprintf("small file %d\n", i)), 0o644)
	}
	files := map[string]string{
		"usr/lib/extension-release.d/extension-release.big":   "ID=_any\nARCHITECTURE=x86-64\nSYSEXT_VERSION_ID=1\n",
		"usr/lib/systemd/system/multi-user.target.d/big.conf": "[Unit]\nUpholds=big.service\n",
		"usr/lib/systemd/system/big.service":                  "[Service]\nExecStart=/bin/true\n",
	}
	for p, c := range files {
		os.MkdirAll(filepath.Dir(filepath.Join(tree, p)), 0o755)
		os.WriteFile(filepath.Join(tree, p), []byte(c), 0o644)
	}
	// The data is random, so the tools are told not to compress it (that
	// only costs time); metadata is compressed as each format does.
	imgs := map[string]string{
		"squashfs-zstd": filepath.Join(dir, "zstd.raw"),
		"squashfs-lz4":  filepath.Join(dir, "lz4.raw"),
		"erofs-lz4":     filepath.Join(dir, "erofs.raw"),
	}
	for _, args := range [][]string{
		{"mksquashfs", tree, imgs["squashfs-zstd"], "-comp", "zstd", "-noD", "-noF", "-noappend", "-quiet", "-no-progress"},
		{"mksquashfs", tree, imgs["squashfs-lz4"], "-comp", "lz4", "-noD", "-noF", "-noappend", "-quiet", "-no-progress"},
		{"mkfs.erofs", "--quiet", "-zlz4", imgs["erofs-lz4"], tree},
	} {
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			b.Fatalf("%v: %v\n%s", args, err, out)
		}
	}
	// The same formats from the metadata alone (a few KiB), to compare
	// the memory a read takes.
	for _, sub := range []string{"usr/lib/big", "usr/share/many"} {
		os.RemoveAll(filepath.Join(tree, sub))
	}
	for _, args := range [][]string{
		{"mksquashfs", tree, filepath.Join(dir, "small-zstd.raw"), "-comp", "zstd", "-noappend", "-quiet", "-no-progress"},
		{"mksquashfs", tree, filepath.Join(dir, "small-lz4.raw"), "-comp", "lz4", "-noappend", "-quiet", "-no-progress"},
		{"mkfs.erofs", "--quiet", "-zlz4", filepath.Join(dir, "small-erofs.raw"), tree},
	} {
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			b.Fatalf("%v: %v\n%s", args, err, out)
		}
	}
	imgs["small-squashfs-zstd"] = filepath.Join(dir, "small-zstd.raw")
	imgs["small-squashfs-lz4"] = filepath.Join(dir, "small-lz4.raw")
	imgs["small-erofs-lz4"] = filepath.Join(dir, "small-erofs.raw")
	os.RemoveAll(tree)
	return imgs
}

// BenchmarkInspect1GiB: reading an image's metadata (what inspect, pull
// and push need) costs the same for 1 GiB as for 1 MiB; hashing the whole
// file is separate and cached. Reports ms per metadata read, the heap
// allocated per read, and the time of a full uncached digest.
// Run with: go test -run '^$' -bench Inspect1GiB -benchtime 1x ./fsimage
func BenchmarkInspect1GiB(b *testing.B) {
	imgs := bigImages(b)
	for _, name := range []string{"squashfs-zstd", "squashfs-lz4", "erofs-lz4"} {
		img := imgs[name]
		b.Run(name, func(b *testing.B) {
			st, _ := os.Stat(img)
			ctx := context.Background()
			const reads = 20
			measure := func(img string) (time.Duration, float64) {
				var ms runtime.MemStats
				runtime.GC()
				runtime.ReadMemStats(&ms)
				alloc0 := ms.TotalAlloc
				start := time.Now()
				for i := 0; i < b.N*reads; i++ {
					info, err := fsimage.OpenMetadata(ctx, img)
					if err != nil || info.Name != "big" {
						b.Fatal(info, err)
					}
				}
				d := time.Since(start) / time.Duration(b.N*reads)
				runtime.ReadMemStats(&ms)
				return d, float64(ms.TotalAlloc-alloc0) / float64(b.N*reads)
			}
			meta, allocPerRead := measure(img)
			_, smallAlloc := measure(imgs["small-"+name])

			start := time.Now()
			if _, err := fsimage.OpenWith(ctx, img, fsimage.Options{Digest: true}); err != nil {
				b.Fatal(err)
			}
			digest := time.Since(start)
			fsimage.Open(ctx, img) // fills the cache
			start = time.Now()
			if _, err := fsimage.Open(ctx, img); err != nil {
				b.Fatal(err)
			}
			cached := time.Since(start)
			b.ReportMetric(float64(st.Size())/(1<<30), "image-GiB")
			b.ReportMetric(float64(meta.Microseconds())/1000, "metadata-ms")
			b.ReportMetric(allocPerRead/(1<<10), "metadata-KiB-alloc")
			b.ReportMetric(smallAlloc/(1<<10), "small-image-KiB-alloc")
			b.ReportMetric(digest.Seconds(), "uncached-digest-s")
			b.ReportMetric(float64(cached.Microseconds())/1000, "cached-open-ms")
		})
	}
}
