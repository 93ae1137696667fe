package fromimage_test

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/sysext/sysext/builder"
	"github.com/sysext/sysext/extension"
	"github.com/sysext/sysext/fromimage"
	"github.com/sysext/sysext/oci/ocitest"
)

// bigLayer is a gzip layer of about size bytes under top/ (usr/lib/...).
func bigLayer(top string, size int64, rng *rand.Rand) layer {
	l := ocitest.BenchLayer([]string{"usr/", "usr/lib/"}, top, size, rng)
	return layer{l.Blob, l.DiffID}
}

// BenchmarkFromImage: a 500 MiB base (5 layers) and a 50 MiB addition in
// the distribution registry on loopback. It reports the time of what the
// command does (resolve, extract the added layer where ScratchParent says,
// build; bound with explicit --os, so no base layer is read), the time of
// downloading the added layer plus building the same tree from the disk,
// their ratio, and the bytes of base layers fetched (must be 0).
// go test ./fromimage -run '^$' -bench FromImage -benchtime 6x
func BenchmarkFromImage(b *testing.B) {
	reg := ocitest.StartDistribution(b)
	rng := rand.New(rand.NewChaCha8([32]byte{2}))
	var baseLayers []layer
	for i := 0; i < 5; i++ {
		baseLayers = append(baseLayers, bigLayer(fmt.Sprintf("usr/lib/base%d/", i), 100<<20, rng))
	}
	addLayer := bigLayer("usr/lib/added/", 50<<20, rng)
	baseRef := push(b, reg, "os/base:1", "amd64", baseLayers...)
	imgRef := push(b, reg, "os/derived:1", "amd64", append(append([]layer{}, baseLayers...), addLayer)...)
	work := b.TempDir()
	ctx := context.Background()
	meta := extension.Metadata{Name: "added", Version: "1", Arch: "x86-64", ID: "debian", VersionID: "12"}
	var ours, theirs, prep time.Duration
	var baseFetched int64
	// The reference's tree: the same files, on the disk, where a user
	// would have them.
	diskTree := filepath.Join(work, "tree")
	os.Mkdir(diskTree, 0o755)
	img0, _ := source(b, imgRef)
	base0, _ := source(b, baseRef)
	if _, err := fromimage.Prepare(ctx, diskTree, fromimage.Options{Image: img0, Base: base0, Arch: "x86-64"}); err != nil {
		b.Fatal(err)
	}
	fromImage := func(i int) {
		syscall.Sync()
		start := time.Now()
		img, _ := source(b, imgRef)
		base, bf := source(b, baseRef)
		// As the command does: the tree goes where files are cheap to
		// create (tmpfs when it has room), the image next to the output.
		plan, err := fromimage.NewPlan(ctx, fromimage.Options{Image: img, Base: base, Arch: "x86-64"})
		if err != nil {
			b.Fatal(err)
		}
		scratch := fromimage.ScratchParent(work, plan.DownloadSize())
		tree, err := os.MkdirTemp(scratch, ".#bench-tree-")
		if err != nil {
			b.Fatal(err)
		}
		defer os.RemoveAll(tree)
		if _, err := plan.Prepare(ctx, tree, ""); err != nil {
			b.Fatal(err)
		}
		prep += time.Since(start)
		if _, err := builder.Build(ctx, builder.Options{Tree: tree, Meta: meta, Output: filepath.Join(work, fmt.Sprintf("a%d.raw", i)), StageDir: scratch}); err != nil {
			b.Fatal(err)
		}
		ours += time.Since(start)
		for _, l := range baseLayers {
			if bf.fetched[digest.FromBytes(l.blob)] {
				baseFetched += int64(len(l.blob))
			}
		}
	}
	// The reference: download the added layer, build the same tree.
	reference := func(i int) {
		syscall.Sync()
		start := time.Now()
		src, _ := source(b, imgRef)
		rc, err := src.Fetcher.Fetch(ctx, ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: digest.FromBytes(addLayer.blob), Size: int64(len(addLayer.blob))})
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, rc)
		rc.Close()
		if _, err := builder.Build(ctx, builder.Options{Tree: diskTree, Meta: meta, Output: filepath.Join(work, fmt.Sprintf("b%d.raw", i))}); err != nil {
			b.Fatal(err)
		}
		theirs += time.Since(start)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		// Alternate which goes first.
		if i%2 == 0 {
			fromImage(i)
			reference(i)
		} else {
			reference(i)
			fromImage(i)
		}
	}
	b.StopTimer()
	n := float64(b.N)
	b.ReportMetric(ours.Seconds()/n, "s/from-image")
	b.ReportMetric(theirs.Seconds()/n, "s/download+build")
	b.ReportMetric(ours.Seconds()/theirs.Seconds(), "ratio")
	b.ReportMetric(float64(baseFetched)/n, "base-bytes-fetched")
	b.ReportMetric(prep.Seconds()/n, "s/resolve+extract")
}
