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
	"golang.org/x/sys/unix"
)

// Side by side on one loopback distribution registry: `sysext fetch` vs
// `oras pull` (throughput including our digest check and fsync), `sysext
// push` vs `oras push`, and the peak RSS of each sysext child process.
// Run with: make bench, or
//
//	go test -run '^$' -bench 'Transfer|FetchTmpfs' -benchtime 2x ./oci/
func BenchmarkTransfer256MiB(b *testing.B) { benchTransfer(b, 256<<20) }
func BenchmarkTransfer1GiB(b *testing.B)   { benchTransfer(b, 1<<30) }

// The same fetches and pulls into tmpfs (/dev/shm): no disk under either
// side, so this compares the download pipelines themselves, as on a node
// that fetches into /run/extensions.
func BenchmarkFetchTmpfs256MiB(b *testing.B) { benchFetchTmpfs(b, 256<<20) }
func BenchmarkFetchTmpfs1GiB(b *testing.B)   { benchFetchTmpfs(b, 1<<30) }

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

// benchSetup builds sysext, starts the distribution registry and makes an
// image of about size bytes.
func benchSetup(b *testing.B, size int64) (oras, sysext string, reg *ocitest.Registry, img string, fi os.FileInfo) {
	b.Helper()
	oras = testenv.RequireTool(b, "oras")
	sysext = testenv.BuildSysext(b)
	reg = ocitest.StartDistribution(b)
	img = bigImage(b, size)
	fi, err := os.Stat(img)
	if err != nil {
		b.Fatal(err)
	}
	return oras, sysext, reg, img, fi
}

func benchTransfer(b *testing.B, size int64) {
	oras, sysext, reg, img, fi := benchSetup(b, size)
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
	// Fetch each artifact both ways (who goes first alternates), then
	// measure the disk's floor for any fetch that fsyncs: the same bytes
	// written durably with nothing else going on. This disk's speed drifts
	// by 2x within minutes, so the floor is taken next to every pair.
	var floor time.Duration
	floorDir := b.TempDir()
	warmUp(b, sysext, oras, reg.Ref("bench/ours0:1"), base, "")
	for i := 0; i < b.N; i++ {
		d, dOras, rss, dSync := fetchPair(b, i, sysext, oras, reg.Ref(fmt.Sprintf("bench/ours%d:1", i)), base, "")
		fetchUs += d
		fetchOras += dOras
		syncOras += dSync
		rssFetch = max(rssFetch, rss)
		floor += diskFloor(b, filepath.Join(floorDir, fmt.Sprint("floor", i)), fi.Size())
	}
	b.StopTimer()
	n := float64(b.N)
	b.ReportMetric(mb*n/floor.Seconds(), "disk-write+fsync-MB/s")
	b.ReportMetric(mb*n/fetchUs.Seconds(), "sysext-fetch-MB/s")
	b.ReportMetric(mb*n/fetchOras.Seconds(), "oras-pull-MB/s")
	b.ReportMetric(fetchOras.Seconds()/fetchUs.Seconds(), "fetch-ratio")
	// oras pull followed by an fsync of what it wrote: the same durable
	// result as our fetch. The best ratio any durable fetch could reach
	// against plain oras pull here: oras's time over the disk floor's. And
	// how close our fetch comes to that floor.
	b.ReportMetric(mb*n/(fetchOras+syncOras).Seconds(), "oras-pull+fsync-MB/s")
	b.ReportMetric((fetchOras+syncOras).Seconds()/fetchUs.Seconds(), "fetch-ratio-durable")
	b.ReportMetric(fetchOras.Seconds()/floor.Seconds(), "fetch-ratio-ceiling")
	b.ReportMetric(floor.Seconds()/fetchUs.Seconds(), "fetch-of-floor")
	b.ReportMetric(mb*n/pushUs.Seconds(), "sysext-push-MB/s")
	b.ReportMetric(mb*n/pushOras.Seconds(), "oras-push-MB/s")
	b.ReportMetric(pushOras.Seconds()/pushUs.Seconds(), "push-ratio")
	b.ReportMetric(rssFetch, "fetch-peak-RSS-MiB")
	b.ReportMetric(rssPush, "push-peak-RSS-MiB")
}

// fetchPair fetches ref with sysext and pulls it with oras, each into a
// fresh directory under parent ("" for the test's temp dir), who goes first
// alternating with i; it returns both times, our peak RSS and the time
// oras's file then took to fsync. Outputs are removed after the pair:
// gigabytes of them kept in the page cache would make later runs reclaim
// memory.
func fetchPair(b *testing.B, i int, sysext, oras, ref, file, parent string) (us, them time.Duration, rss float64, syncThem time.Duration) {
	b.Helper()
	mk := func() string {
		if parent == "" {
			return b.TempDir()
		}
		d, err := os.MkdirTemp(parent, "sysext-bench-")
		if err != nil {
			b.Fatal(err)
		}
		return d
	}
	outUs, outOras := mk(), mk()
	defer os.RemoveAll(outUs)
	defer os.RemoveAll(outOras)
	fetch := func() {
		us, rss = timed(b, outUs, sysext, "fetch", "-q", "--insecure-allow-unsigned", ref, "-o", outUs)
	}
	pull := func() {
		them, _ = timed(b, outOras, oras, "pull", "--plain-http", "--no-tty", ref, "-o", outOras)
		// What oras leaves in the page cache, made durable as our fetch
		// makes it: fsync of the pulled file (sync FILE).
		start := time.Now()
		if out, err := exec.Command("sync", filepath.Join(outOras, file)).CombinedOutput(); err != nil {
			b.Fatalf("sync: %v %s", err, out)
		}
		syncThem = time.Since(start)
	}
	if i%2 == 0 {
		pull()
		fetch()
	} else {
		fetch()
		pull()
	}
	return us, them, rss, syncThem
}

// warmUp runs one untimed fetch/pull pair. On this VM memory the guest
// freed goes back to the host after a few idle seconds (virtio-balloon
// free page reporting), and whoever touches it first pays for faulting it
// in again: the first run after building the image took 1.9 s where the
// next ones took 0.5.
func warmUp(b *testing.B, sysext, oras, ref, file, parent string) {
	b.Helper()
	fetchPair(b, 0, sysext, oras, ref, file, parent)
}

func benchFetchTmpfs(b *testing.B, size int64) {
	var st unix.Statfs_t
	if err := unix.Statfs("/dev/shm", &st); err != nil || st.Type != unix.TMPFS_MAGIC {
		b.Skip("/dev/shm is not a tmpfs here: this benchmark needs one for its outputs")
	}
	if st.Bavail*uint64(st.Bsize) < uint64(3*size) {
		b.Skipf("/dev/shm has less than %d MiB free: this benchmark needs room for two outputs", 3*size>>20)
	}
	oras, sysext, reg, img, fi := benchSetup(b, size)
	mb := float64(fi.Size()) / 1e6
	ref := reg.Ref("bench/tmpfs:1")
	if out, err := exec.Command(sysext, "push", "-q", img, ref).CombinedOutput(); err != nil {
		b.Fatalf("push: %v %s", err, out)
	}
	var us, them time.Duration
	var rss float64
	warmUp(b, sysext, oras, ref, filepath.Base(img), "/dev/shm")
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		d, dOras, r, _ := fetchPair(b, i, sysext, oras, ref, filepath.Base(img), "/dev/shm")
		us += d
		them += dOras
		rss = max(rss, r)
	}
	b.StopTimer()
	n := float64(b.N)
	b.ReportMetric(mb*n/us.Seconds(), "sysext-fetch-MB/s")
	b.ReportMetric(mb*n/them.Seconds(), "oras-pull-MB/s")
	b.ReportMetric(them.Seconds()/us.Seconds(), "fetch-ratio")
	b.ReportMetric(rss, "fetch-peak-RSS-MiB")
}

// diskFloor writes size bytes of random data durably at path, the way
// Download writes a layer (oci.DurableWrite), and returns how long it took.
func diskFloor(b *testing.B, path string, size int64) time.Duration {
	b.Helper()
	buf := make([]byte, 1<<20)
	rand.NewChaCha8([32]byte{2}).Read(buf) // not zeros: a virtual disk may shortcut those
	syscall.Sync()
	start := time.Now()
	if err := oci.DurableWrite(path, buf, size); err != nil {
		b.Fatal(err)
	}
	// The file stays (its directory goes at the end): deleting it here
	// would have the disk discard it while the next fetches run.
	return time.Since(start)
}
