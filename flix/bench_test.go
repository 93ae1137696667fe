package flix

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/content"

	"encoding/json"

	"github.com/sysext/sysext/internal/testenv"
	"github.com/sysext/sysext/oci"
	"github.com/sysext/sysext/oci/ocitest"
)

func pushBenchImage(b testing.TB, s content.Pusher, layers int, total int64) ocispec.Descriptor {
	ctx := context.Background()
	rng := rand.New(rand.NewChaCha8([32]byte{1}))
	push := func(mt string, blob []byte) ocispec.Descriptor {
		d := content.NewDescriptorFromBytes(mt, blob)
		if err := s.Push(ctx, d, bytes.NewReader(blob)); err != nil {
			b.Fatal(err)
		}
		return d
	}
	cfg := ocispec.Image{Platform: ocispec.Platform{OS: "linux", Architecture: "amd64"}, RootFS: ocispec.RootFS{Type: "layers"}}
	m := ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest}
	for i := 0; i < layers; i++ {
		l := ocitest.BenchLayer(nil, fmt.Sprintf("l%d/", i), total/int64(layers), rng)
		blob, diffID := l.Blob, l.DiffID
		m.Layers = append(m.Layers, push(ocispec.MediaTypeImageLayerGzip, blob))
		cfg.RootFS.DiffIDs = append(cfg.RootFS.DiffIDs, diffID)
	}
	cb, _ := json.Marshal(cfg)
	m.Config = push(ocispec.MediaTypeImageConfig, cb)
	mb, _ := json.Marshal(m)
	return push(ocispec.MediaTypeImageManifest, mb)
}

// TestHelperRootfs is the child process of BenchmarkRootfs500MiB, so that
// its peak RSS is measured alone; it does nothing in a normal test run.
func TestHelperRootfs(t *testing.T) {
	ref, dir := os.Getenv("SYSEXT_BENCH_REF"), os.Getenv("SYSEXT_BENCH_DIR")
	if ref == "" {
		t.Skip("helper process for BenchmarkRootfs500MiB")
	}
	ctx := context.Background()
	r, err := oci.ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	tg, err := oci.Open(ctx, r, ocitest.TestOptions())
	if err != nil {
		t.Fatal(err)
	}
	desc, err := tg.Resolve(ctx, r.Reference())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Rootfs(ctx, tg, desc, dir, RootfsOptions{}); err != nil {
		t.Fatal(err)
	}
	// VmHWM is this process image's own peak RSS. getrusage's ru_maxrss
	// is not: Go starts children with vfork, and exec carries the
	// parent's peak (the benchmark holds the whole image in memory) over.
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(status), "\n") {
		if strings.HasPrefix(l, "VmHWM:") {
			fmt.Printf("peak-rss-kib %s\n", strings.TrimSuffix(strings.TrimSpace(strings.TrimPrefix(l, "VmHWM:")), " kB"))
		}
	}
}

// BenchmarkRootfs500MiB extracts a 5-layer, 500 MiB image from the
// distribution registry on loopback, with `sysext rootfs`'s code in a
// child process and with `crane export | tar -x`, three rounds each,
// and reports the median times, their ratio and the child's peak RSS.
// Run with: make bench, or
// go test ./flix -run '^$' -bench Rootfs500MiB -benchtime 1x
func BenchmarkRootfs500MiB(b *testing.B) {
	crane := testenv.RequireTool(b, "crane")
	reg := ocitest.StartDistribution(b)
	tg, ref := reg.Open(b, "bench/big:v1")
	desc := pushBenchImage(b, tg, 5, 500<<20)
	if err := tg.Tag(context.Background(), desc, ref.Tag); err != nil {
		b.Fatal(err)
	}
	work := b.TempDir()
	var ours, theirs []float64
	var rss int64
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for round := 0; round < 3; round++ {
			d1 := filepath.Join(work, fmt.Sprintf("crane-%d-%d", i, round))
			os.Mkdir(d1, 0o755)
			// Each run starts with no dirty pages of the one before.
			syscall.Sync()
			start := time.Now()
			cmd := exec.Command("sh", "-c", fmt.Sprintf("%s export --insecure %s - | tar -x -C %s", crane, reg.Ref("bench/big:v1"), d1))
			if out, err := cmd.CombinedOutput(); err != nil {
				b.Fatalf("crane export: %v\n%s", err, out)
			}
			theirs = append(theirs, time.Since(start).Seconds())

			d2 := filepath.Join(work, fmt.Sprintf("sysext-%d-%d", i, round))
			syscall.Sync()
			start = time.Now()
			cmd = exec.Command(os.Args[0], "-test.run=^TestHelperRootfs$", "-test.count=1")
			cmd.Env = append(os.Environ(), "SYSEXT_BENCH_REF="+reg.Ref("bench/big:v1"), "SYSEXT_BENCH_DIR="+d2)
			out, err := cmd.CombinedOutput()
			if err != nil {
				b.Fatalf("rootfs: %v\n%s", err, out)
			}
			ours = append(ours, time.Since(start).Seconds())
			var kib int64
			for _, l := range strings.Split(string(out), "\n") {
				if v, ok := strings.CutPrefix(l, "peak-rss-kib "); ok {
					kib, _ = strconv.ParseInt(v, 10, 64)
				}
			}
			if kib == 0 {
				b.Fatalf("the helper did not report its peak RSS:\n%s", out)
			}
			rss = max(rss, kib)
			os.RemoveAll(d1)
			os.RemoveAll(d2)
		}
	}
	b.StopTimer()
	med := func(v []float64) float64 { sort.Float64s(v); return v[len(v)/2] }
	b.ReportMetric(med(ours), "s/sysext")
	b.ReportMetric(med(theirs), "s/crane+tar")
	b.ReportMetric(med(ours)/med(theirs), "ratio")
	b.ReportMetric(float64(rss)/1024, "MiB-peak-RSS")
}
