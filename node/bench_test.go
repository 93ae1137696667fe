package node

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/sysext/sysext/internal/testenv"
	"github.com/sysext/sysext/oci/ocitest"
)

// BenchmarkUpdateAllNothingNew: `update --all` with 20 installed
// extensions whose tags did not move costs one request each.
func BenchmarkUpdateAllNothingNew(b *testing.B) {
	var count requestCounter
	reg := ocitest.NewOlareg(b, count.fault())
	root := nodeRoot(b, debianRelease)
	n := testNode(root)
	ctx := context.Background()
	const exts = 20
	for i := range exts {
		name := fmt.Sprintf("bench%02d", i)
		ref := reg.Ref("ext/" + name + ":stable")
		push(b, ref, makeImage(b, meta(name, "1"), 0))
		if _, err := n.Pull(ctx, PullRequest{Ref: ref}); err != nil {
			b.Fatal(err)
		}
	}
	count.reset()
	b.ResetTimer()
	start := time.Now()
	for b.Loop() {
		rs, err := n.Update(ctx, UpdateOptions{All: true})
		if err != nil || len(rs) != exts {
			b.Fatal(rs, err)
		}
	}
	perOp := float64(count.all.Load()) / float64(b.N)
	b.ReportMetric(perOp, "requests/op")
	b.ReportMetric(time.Since(start).Seconds()/float64(b.N), "s/op")
	if perOp != exts {
		b.Fatalf("%v requests per update, want %d", perOp, exts)
	}
}

// BenchmarkPull1GiB pulls a 1 GiB image from the distribution registry with
// the sysext binary and compares it with `sysext fetch` of the same image:
// wall time and peak RSS of each process.
func BenchmarkPull1GiB(b *testing.B) {
	mk := testenv.RequireTool(b, "mksquashfs")
	reg := ocitest.StartDistribution(b)
	tmp := b.TempDir()
	bin := testenv.BuildSysext(b)
	// A 1 GiB uncompressed squashfs image (random payload).
	tree := filepath.Join(tmp, "tree")
	m := meta("big", "1")
	must(b, os.MkdirAll(filepath.Join(tree, "usr/lib/extension-release.d"), 0o755))
	must(b, os.WriteFile(filepath.Join(tree, "usr/lib/extension-release.d/extension-release.big"), m.Release().Format(), 0o644))
	must(b, os.MkdirAll(filepath.Join(tree, "usr/share/big"), 0o755))
	dd := exec.Command("dd", "if=/dev/urandom", "of="+filepath.Join(tree, "usr/share/big/pad"), "bs=1M", "count=1024", "status=none")
	if out, err := dd.CombinedOutput(); err != nil {
		b.Fatalf("dd: %v %s", err, out)
	}
	img := filepath.Join(tmp, "big-1-"+string(m.Arch)+".raw")
	if out, err := exec.Command(mk, tree, img, "-all-root", "-noappend", "-no-progress", "-quiet", "-noI", "-noD", "-noF", "-noX").CombinedOutput(); err != nil {
		b.Fatalf("mksquashfs: %v %s", err, out)
	}
	os.RemoveAll(tree)
	ref := reg.Ref("bench/big:1")
	push(b, ref, img)
	os.Remove(img)

	run := func(args ...string) (time.Duration, int64) {
		cmd := exec.Command(bin, args...)
		peak := testenv.PeakRSSCommand(b, cmd)
		start := time.Now()
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("%v: %v\n%s", args, err, out)
		}
		d := time.Since(start)
		return d, peak()
	}
	b.ResetTimer()
	i := 0
	var sumP, sumF time.Duration
	var maxP, maxF int64
	for b.Loop() {
		root := nodeRoot(b, debianRelease)
		fetchDir := filepath.Join(tmp, "fetch")
		os.RemoveAll(fetchDir)
		must(b, os.MkdirAll(fetchDir, 0o755))
		runtime.GC()
		var tf, tp time.Duration
		var rf, rp int64
		// Alternate the order so neither always runs on a warmer cache.
		if i%2 == 0 {
			tf, rf = run("fetch", ref, "-o", fetchDir, "-q", "--insecure-allow-unsigned")
			tp, rp = run("pull", ref, "--root", root, "-q", "--insecure-allow-unsigned")
		} else {
			tp, rp = run("pull", ref, "--root", root, "-q", "--insecure-allow-unsigned")
			tf, rf = run("fetch", ref, "-o", fetchDir, "-q", "--insecure-allow-unsigned")
		}
		i++
		os.RemoveAll(fetchDir)
		os.RemoveAll(root)
		sumP, sumF = sumP+tp, sumF+tf
		maxP, maxF = max(maxP, rp), max(maxF, rf)
	}
	const gib = 1 << 30
	runs := float64(i)
	b.ReportMetric(float64(gib)*runs/sumP.Seconds()/1e6, "pull-MB/s")
	b.ReportMetric(float64(gib)*runs/sumF.Seconds()/1e6, "fetch-MB/s")
	b.ReportMetric(float64(maxP)/(1<<20), "pull-peak-RSS-MiB")
	b.ReportMetric(float64(maxF)/(1<<20), "fetch-peak-RSS-MiB")
	b.ReportMetric(sumP.Seconds()/sumF.Seconds(), "pull/fetch-time")
}
