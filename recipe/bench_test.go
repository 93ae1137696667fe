package recipe

import (
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/sysext/sysext/builder"
	"github.com/sysext/sysext/extension"
	"github.com/sysext/sysext/internal/testenv"
)

// realisticTarball packs up to limit bytes of the host's own programs and
// libraries (real ELF files compress like upstream release binaries do)
// into a tarball laid out as bench-1.0/bin/... .
func realisticTarball(b *testing.B, limit int64) []byte {
	var ms []member
	var total int64
	for _, dir := range []string{"/usr/bin", "/usr/lib/x86_64-linux-gnu", "/usr/lib"} {
		filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
			if err != nil || total >= limit {
				return filepath.SkipDir
			}
			if !d.Type().IsRegular() {
				return nil
			}
			info, err := d.Info()
			if err != nil || info.Size() > 32<<20 {
				return nil
			}
			data, err := os.ReadFile(p)
			if err != nil {
				return nil
			}
			rel, _ := filepath.Rel("/", p)
			ms = append(ms, exe("bench-1.0/"+rel, string(data)))
			total += int64(len(data))
			return nil
		})
	}
	return tgz(b, ms...)
}

const benchRecipe = `name: bench
description: benchmark recipe
upstream: https://example.org/bench
version: {pattern: '[0-9.]+'}
arches: {x86-64: {}}
downloads:
  - id: bench
    url: https://example.org/bench/bench-${version}.tar.gz
files:
  - {from: "bench-${version}/", to: /usr/lib/bench/}
`

// BenchmarkBakeCachedVsBuild compares baking from a cached download with
// 'sysext build' (builder.Build) of the very tree the bake lays out, on
// ~96 MiB of real binaries. The target is bake/build <= 1.1; it reports
// the ratio as the "bake/build" metric.
func BenchmarkBakeCachedVsBuild(b *testing.B) {
	testenv.RequireTool(b, "mksquashfs")
	data := realisticTarball(b, 96<<20)
	r, err := Parse([]byte(benchRecipe), "bench.yaml")
	if err != nil {
		b.Fatal(err)
	}
	u := newUpstream(b)
	u.add("https://example.org/bench/bench-1.0.tar.gz", data)
	work := b.TempDir()
	cache := filepath.Join(work, "cache")
	opts := BakeOptions{
		Recipe:   r,
		Resolve:  ResolveOptions{Version: "1.0", Arch: "x86-64", SHA256: map[string]string{"bench": sum(data)}},
		Output:   filepath.Join(work, "bake.raw"),
		Force:    true,
		CacheDir: cache,
		Mirror:   u.mirror(),
	}
	ctx := context.Background()
	if _, err := Bake(ctx, opts); err != nil { // fills the cache
		b.Fatal(err)
	}
	// The same tree, laid out once, for the plain build.
	plan, err := r.Resolve(opts.Resolve)
	if err != nil {
		b.Fatal(err)
	}
	tree := filepath.Join(work, "tree")
	os.Mkdir(tree, 0o755)
	blob, err := (&Fetcher{CacheDir: cache}).Fetch(ctx, plan.Downloads[0])
	if err != nil {
		b.Fatal(err)
	}
	if _, err := plan.Layout(ctx, tree, map[string]string{"bench": blob}); err != nil {
		b.Fatal(err)
	}
	build := builder.Options{Tree: tree, Meta: extension.Metadata{Name: "bench", Version: "1.0", Arch: "x86-64", ID: "_any"}, Output: filepath.Join(work, "build.raw"), Force: true}
	// The machine is shared and noisy: interleave the two and compare the
	// fastest run of each, the one least disturbed by other work.
	// CPU time (ours and mksquashfs's) is reported too: it hardly moves
	// when other work shares the machine.
	bakeT, buildT := time.Duration(1<<62), time.Duration(1<<62)
	var bakeCPU, buildCPU time.Duration
	b.ResetTimer()
	doBuild := func() (time.Duration, time.Duration) {
		c0, t0 := cpuTime(), time.Now()
		if _, err := builder.Build(ctx, build); err != nil {
			b.Fatal(err)
		}
		return time.Since(t0), cpuTime() - c0
	}
	doBake := func() (time.Duration, time.Duration) {
		c0, t0 := cpuTime(), time.Now()
		if _, err := Bake(ctx, opts); err != nil {
			b.Fatal(err)
		}
		return time.Since(t0), cpuTime() - c0
	}
	for i := 0; i < b.N; i++ {
		for round := 0; round < 4; round++ {
			// Alternate the order so neither always runs second.
			first, second := doBuild, doBake
			if round%2 == 1 {
				first, second = doBake, doBuild
			}
			w1, c1 := first()
			w2, c2 := second()
			if round%2 == 1 {
				w1, c1, w2, c2 = w2, c2, w1, c1
			}
			buildT, bakeT = min(buildT, w1), min(bakeT, w2)
			buildCPU += c1
			bakeCPU += c2
		}
	}
	b.ReportMetric(float64(bakeT)/float64(buildT), "bake/build")
	b.ReportMetric(float64(bakeCPU)/float64(buildCPU), "bake/build-cpu")
	b.ReportMetric(bakeT.Seconds(), "bake-s")
	b.ReportMetric(buildT.Seconds(), "build-s")
	if u.count("https://example.org/bench/bench-1.0.tar.gz") != 1 {
		b.Errorf("the cached bake downloaded again")
	}
}

// cpuTime is the user+system time of this process and its waited-for
// children (mksquashfs).
func cpuTime() time.Duration {
	var self, kids syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &self)
	syscall.Getrusage(syscall.RUSAGE_CHILDREN, &kids)
	tv := func(t syscall.Timeval) time.Duration { return time.Duration(t.Nano()) }
	return tv(self.Utime) + tv(self.Stime) + tv(kids.Utime) + tv(kids.Stime)
}
