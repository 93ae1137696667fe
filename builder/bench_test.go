package builder

import (
	"cmp"
	"context"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sysext/sysext/extension"
)

// makeBenchTree writes a tree of about size bytes: half incompressible
// (random) 1 MiB files, half compressible text, plus 2000 small files so
// staging has entries to link. It returns the tree's path.
func makeBenchTree(b *testing.B, size int64) string {
	b.Helper()
	dir := filepath.Join(b.TempDir(), "tree")
	rng := rand.New(rand.NewChaCha8([32]byte{1}))
	buf := make([]byte, 1<<20)
	var written int64
	for i := 0; written < size/2; i++ {
		p := filepath.Join(dir, "usr/lib/bench/random", fmt.Sprintf("%03d", i/50), fmt.Sprintf("r%04d.bin", i))
		os.MkdirAll(filepath.Dir(p), 0o755)
		for j := range buf {
			buf[j] = byte(rng.Uint32())
		}
		if err := os.WriteFile(p, buf, 0o644); err != nil {
			b.Fatal(err)
		}
		written += int64(len(buf))
	}
	line := []byte("compressible benchmark text with a counter: ")
	for i := 0; written < size-2000*4096; i++ {
		p := filepath.Join(dir, "usr/share/bench/text", fmt.Sprintf("%03d", i/50), fmt.Sprintf("t%04d.txt", i))
		os.MkdirAll(filepath.Dir(p), 0o755)
		buf = buf[:0]
		for n := 0; len(buf) < 1<<20; n++ {
			buf = append(buf, line...)
			buf = append(buf, fmt.Sprintf("%d %d\n", i, n)...)
		}
		if err := os.WriteFile(p, buf, 0o644); err != nil {
			b.Fatal(err)
		}
		written += int64(len(buf))
	}
	small := make([]byte, 4096)
	for i := 0; i < 2000; i++ {
		p := filepath.Join(dir, "usr/lib/bench/small", fmt.Sprintf("%02d", i/100), fmt.Sprintf("s%04d", i))
		os.MkdirAll(filepath.Dir(p), 0o755)
		for j := range small {
			small[j] = byte(rng.Uint32() % 16)
		}
		if err := os.WriteFile(p, small, 0o644); err != nil {
			b.Fatal(err)
		}
	}
	return dir
}

// BenchmarkBuild300MiB compares Build with the bare tool run on the same
// tree with the same options, side by side (alternating, several rounds,
// median of each), and reports the ratio: the overhead of staging, the
// metadata and the read-back check (the digest and the fsync are opt-in).
// build/own-tool is the whole Build against the tool run inside it (immune
// to the run-to-run noise of the tool itself), and the phases say where
// the time goes. Run with: make bench, or
// go test -run '^$' -bench Build300MiB -benchtime 2x ./builder
func BenchmarkBuild300MiB(b *testing.B) {
	tree := makeBenchTree(b, 300<<20)
	syscall.Sync() // start every run with a clean page cache to write back
	phases := map[string]time.Duration{}
	var mu sync.Mutex // the post-tool phases report concurrently
	phaseHook = func(name string, d time.Duration) {
		mu.Lock()
		defer mu.Unlock()
		phases[name] += d
	}
	defer func() { phaseHook = nil }()
	for _, tc := range []struct {
		format ImageFormat
		comp   string
		rounds int
	}{{Squashfs, "lz4", 11}, {EROFS, "lz4", 5}, {Squashfs, "", 1}, {EROFS, "", 1}} {
		b.Run(fmt.Sprintf("%s-%s", tc.format, cmp.Or(tc.comp, "default")), func(b *testing.B) {
			if _, err := exec.LookPath(map[ImageFormat]string{Squashfs: "mksquashfs", EROFS: "mkfs.erofs"}[tc.format]); err != nil {
				b.Skip(err)
			}
			opts := Options{
				Tree:        tree,
				Meta:        extension.Metadata{Name: "bench", Version: "1", Arch: "x86-64", ID: "_any"},
				Format:      tc.format,
				Compression: tc.comp,
				Force:       true,
			}
			clear(phases)
			rounds := tc.rounds
			var bare, ours []time.Duration
			var sumOurs time.Duration
			var size int64
			for i := 0; i < b.N; i++ {
				for r := 0; r < rounds; r++ {
					out := b.TempDir()
					p, err := plan(context.Background(), Options{Tree: tree, Meta: opts.Meta, Format: tc.format, Compression: tc.comp, Output: out})
					if err != nil {
						b.Fatal(err)
					}
					name, args := p.toolArgs(tree, filepath.Join(out, "bare.raw"), false)
					runBare := func() {
						start := time.Now()
						if o, err := exec.Command(name, args...).CombinedOutput(); err != nil {
							b.Fatalf("%s: %v\n%s", name, err, o)
						}
						bare = append(bare, time.Since(start))
						os.Remove(filepath.Join(out, "bare.raw"))
						syscall.Sync()
					}
					runOurs := func() {
						opts.Output = out
						start := time.Now()
						res, err := Build(context.Background(), opts)
						if err != nil {
							b.Fatal(err)
						}
						ours = append(ours, time.Since(start))
						sumOurs += time.Since(start)
						size = res.Size
						os.Remove(res.Path)
						syscall.Sync()
					}
					// Alternate which goes first: the second of a pair
					// runs while the first one's freed blocks settle.
					if r%2 == 0 {
						runBare()
						runOurs()
					} else {
						runOurs()
						runBare()
					}
				}
			}
			b.ReportMetric(median(bare).Seconds(), "bare-s")
			b.ReportMetric(median(ours).Seconds(), "sysext-s")
			b.ReportMetric(float64(median(ours))/float64(median(bare)), "ratio")
			b.ReportMetric(float64(size)/(1<<20), "image-MiB")
			// Our overhead without the noise between separate tool runs:
			// the whole Build against the tool's run inside it.
			b.ReportMetric(float64(sumOurs)/float64(phases["tool"]), "build/own-tool")
			for name, d := range phases {
				b.ReportMetric(d.Seconds()/float64(rounds*b.N), name+"-s")
			}
		})
	}
}

// median is the middle of ds: separate runs of a fast tool vary by ±15%
// here, and the median of alternating runs is steadier than the best.
func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// BenchmarkScanTree is the walk every build makes for privileges and
// device nodes (one lstat and one getxattr per file, no content read) on a
// tree of 10,000 small files in 100 directories; its floor, a bare
// filepath.WalkDir of the same tree, runs beside it.
func BenchmarkScanTree(b *testing.B) {
	dir := filepath.Join(b.TempDir(), "tree")
	for i := 0; i < 10000; i++ {
		p := filepath.Join(dir, "usr/lib/scan", fmt.Sprintf("%02d", i/100), fmt.Sprintf("f%05d", i))
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte("x"), 0o755); err != nil {
			b.Fatal(err)
		}
	}
	b.Run("scan", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			if _, err := scanTree(context.Background(), dir, nil); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("walk-floor", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			filepath.WalkDir(dir, func(string, fs.DirEntry, error) error { return nil })
		}
	})
}
