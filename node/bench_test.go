package node

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"syscall"
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
	bin := filepath.Join(tmp, "sysext")
	build := exec.Command("go", "build", "-o", bin, "github.com/sysext/sysext/cmd/sysext")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		b.Fatalf("build: %v\n%s", err, out)
	}
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
		start := time.Now()
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("%v: %v\n%s", args, err, out)
		}
		d := time.Since(start)
		ru := cmd.ProcessState.SysUsage().(*syscall.Rusage)
		return d, ru.Maxrss * 1024
	}
	b.ResetTimer()
	for b.Loop() {
		root := nodeRoot(b, debianRelease)
		fetchDir := filepath.Join(tmp, "fetch")
		os.RemoveAll(fetchDir)
		must(b, os.MkdirAll(fetchDir, 0o755))
		runtime.GC()
		tf, rf := run("fetch", ref, "-o", fetchDir, "-q", "--insecure-allow-unsigned")
		os.RemoveAll(fetchDir)
		tp, rp := run("pull", ref, "--root", root, "-q", "--insecure-allow-unsigned")
		os.RemoveAll(root)
		const gib = 1 << 30
		b.ReportMetric(float64(gib)/tp.Seconds()/1e6, "pull-MB/s")
		b.ReportMetric(float64(gib)/tf.Seconds()/1e6, "fetch-MB/s")
		b.ReportMetric(float64(rp)/(1<<20), "pull-peak-RSS-MiB")
		b.ReportMetric(float64(rf)/(1<<20), "fetch-peak-RSS-MiB")
		b.ReportMetric(tp.Seconds()/tf.Seconds(), "pull/fetch-time")
	}
}
