package oci_test

import (
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/sysext/sysext/extension"
	"github.com/sysext/sysext/internal/testenv"
	"github.com/sysext/sysext/oci"
	"github.com/sysext/sysext/oci/ocitest"
)

// Side by side on one loopback distribution registry: `sysext fetch` vs
// `oras pull` (throughput including our digest check and fsync), `sysext
// push` vs `oras push`, and the peak RSS of each sysext child process.
// Run with: make bench, or
//
//	go test -run '^$' -bench Transfer -benchtime 1x ./oci/
func BenchmarkTransfer256MiB(b *testing.B) { benchTransfer(b, 256<<20) }
func BenchmarkTransfer1GiB(b *testing.B)   { benchTransfer(b, 1<<30) }

// bigImage writes a squashfs image of about size bytes of incompressible
// data (stored uncompressed, so the image is as big as the payload).
func bigImage(b *testing.B, size int64) string {
	b.Helper()
	mk := testenv.RequireTool(b, "mksquashfs")
	tmp := b.TempDir()
	m := ocitest.Meta("big", "1", extension.HostArch())
	rel := filepath.Join(tmp, "root", extension.ReleasePath(m.Name))
	os.MkdirAll(filepath.Dir(rel), 0o755)
	os.WriteFile(rel, m.Release().Format(), 0o644)
	f, err := os.Create(filepath.Join(tmp, "root", "usr", "payload"))
	if err != nil {
		b.Fatal(err)
	}
	r := rand.NewChaCha8([32]byte{1})
	buf := make([]byte, 4<<20)
	for w := int64(0); w < size; w += int64(len(buf)) {
		r.Read(buf)
		if _, err := f.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
	f.Close()
	out := filepath.Join(tmp, extension.FileName(m.Name, m.Version, m.Arch))
	if o, err := exec.Command(mk, filepath.Join(tmp, "root"), out, "-noappend", "-all-root", "-quiet", "-no-progress", "-noI", "-noD", "-noF", "-noX").CombinedOutput(); err != nil {
		b.Fatalf("mksquashfs: %v %s", err, o)
	}
	os.RemoveAll(filepath.Join(tmp, "root"))
	return out
}

// timed runs a command and returns its wall time and peak RSS in MiB.
// It syncs first, so that neither side pays for the other's (or the
// registry's) writeback: our fetch fsyncs, and on ext4 an fsync also waits
// for other files' pending data.
func timed(b *testing.B, dir string, name string, args ...string) (time.Duration, float64) {
	b.Helper()
	syscall.Sync()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	peak := testenv.PeakRSSCommand(b, cmd)
	start := time.Now()
	out, err := cmd.CombinedOutput()
	d := time.Since(start)
	if err != nil {
		b.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
	return d, float64(peak()) / (1 << 20)
}

func benchTransfer(b *testing.B, size int64) {
	oras := testenv.RequireTool(b, "oras")
	sysext := testenv.BuildSysext(b)
	reg := ocitest.StartDistribution(b)
	img := bigImage(b, size)
	fi, _ := os.Stat(img)
	mb := float64(fi.Size()) / 1e6
	dir := filepath.Dir(img)
	base := filepath.Base(img)
	var pushUs, pushOras, fetchUs, fetchOras, syncOras time.Duration
	var rssPush, rssFetch float64
	b.ResetTimer()
	// Pushes first: fresh repositories, so every byte is uploaded; who
	// goes first alternates (the second upload of a blob the registry
	// already has is deleted by it).
	for i := 0; i < b.N; i++ {
		runtime.GC()
		ours := func() {
			d, rss := timed(b, dir, sysext, "push", "-q", img, reg.Ref(fmt.Sprintf("bench/ours%d:1", i)))
			pushUs += d
			rssPush = max(rssPush, rss)
		}
		theirs := func() {
			d, _ := timed(b, dir, oras, "push", "--plain-http", "--no-tty", reg.Ref(fmt.Sprintf("bench/oras%d:1", i)), base+":"+oci.MediaTypeSquashfs)
			pushOras += d
		}
		if i%2 == 0 {
			ours()
			theirs()
		} else {
			theirs()
			ours()
		}
	}
	// The disk's floor for any fetch that fsyncs: write and fsync as many
	// bytes with nothing else going on. Measured between the pushes and the
	// fetches, it also waits out what the pushes left the disk to do (this
	// root filesystem is mounted with -o discard: the registry's deleted
	// uploads are discarded in the background and slow every later flush).
	syscall.Sync()
	floor := diskFloor(b, filepath.Join(b.TempDir(), "floor"), fi.Size())

	// Fetch each artifact both ways; alternate who goes first.
	for i := 0; i < b.N; i++ {
		ref := reg.Ref(fmt.Sprintf("bench/ours%d:1", i))
		outUs, outOras := b.TempDir(), b.TempDir()
		fetch := func() {
			d, rss := timed(b, outUs, sysext, "fetch", "-q", "--insecure-allow-unsigned", ref, "-o", outUs)
			fetchUs += d
			rssFetch = max(rssFetch, rss)
		}
		pull := func() {
			d, _ := timed(b, outOras, oras, "pull", "--plain-http", "--no-tty", ref, "-o", outOras)
			fetchOras += d
			// What oras leaves in the page cache, made durable as our
			// fetch makes it: fsync of the pulled file (sync FILE).
			start := time.Now()
			if out, err := exec.Command("sync", filepath.Join(outOras, base)).CombinedOutput(); err != nil {
				b.Fatalf("sync: %v %s", err, out)
			}
			syncOras += time.Since(start)
		}
		if i%2 == 0 {
			pull()
			fetch()
		} else {
			fetch()
			pull()
		}
		// Gigabytes of outputs kept in the page cache would make the
		// later runs reclaim memory.
		os.RemoveAll(outUs)
		os.RemoveAll(outOras)
	}
	b.StopTimer()
	b.ReportMetric(mb/floor.Seconds(), "disk-write+fsync-MB/s")
	n := float64(b.N)
	b.ReportMetric(mb*n/fetchUs.Seconds(), "sysext-fetch-MB/s")
	b.ReportMetric(mb*n/fetchOras.Seconds(), "oras-pull-MB/s")
	b.ReportMetric(fetchOras.Seconds()/fetchUs.Seconds(), "fetch-ratio")
	// oras pull followed by an fsync of what it wrote: the same durable
	// result as our fetch. And the best ratio any durable fetch could
	// reach against plain oras pull here: the disk floor over oras's rate.
	b.ReportMetric(mb*n/(fetchOras+syncOras).Seconds(), "oras-pull+fsync-MB/s")
	b.ReportMetric((fetchOras+syncOras).Seconds()/fetchUs.Seconds(), "fetch-ratio-durable")
	b.ReportMetric((mb/floor.Seconds())/(mb*n/fetchOras.Seconds()), "fetch-ratio-ceiling")
	b.ReportMetric(mb*n/pushUs.Seconds(), "sysext-push-MB/s")
	b.ReportMetric(mb*n/pushOras.Seconds(), "oras-push-MB/s")
	b.ReportMetric(pushOras.Seconds()/pushUs.Seconds(), "push-ratio")
	b.ReportMetric(rssFetch, "fetch-peak-RSS-MiB")
	b.ReportMetric(rssPush, "push-peak-RSS-MiB")
}

func diskFloor(b *testing.B, path string, size int64) time.Duration {
	b.Helper()
	buf := make([]byte, 1<<20)
	rand.NewChaCha8([32]byte{2}).Read(buf) // not zeros: a virtual disk may shortcut those
	start := time.Now()
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	for w := int64(0); w < size; w += int64(len(buf)) {
		if _, err := f.Write(buf[:min(int64(len(buf)), size-w)]); err != nil {
			b.Fatal(err)
		}
	}
	if err := f.Sync(); err != nil {
		b.Fatal(err)
	}
	f.Close()
	// The file stays (its directory goes at the end): deleting it here
	// would have the disk discard it while the fetches run.
	return time.Since(start)
}
