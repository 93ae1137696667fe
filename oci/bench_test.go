package oci_test

import (
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sysext/sysext/extension"
	"github.com/sysext/sysext/internal/testenv"
	"github.com/sysext/sysext/oci"
	"github.com/sysext/sysext/oci/ocitest"
	"golang.org/x/sys/unix"
)

// Side by side on one loopback distribution registry, in one run: `sysext
// fetch` vs `oras pull` onto the disk (ours with its digest check and
// fsync) and into tmpfs (/dev/shm: no disk under either side, as on a
// node that fetches into /run/extensions), `sysext push` vs `oras push`,
// the peak RSS of each sysext child process, and the floors of a durable
// fetch here (the disk, SHA-256, the network). Run with: make bench, or
//
//	go test -run '^$' -bench Transfer -benchtime 3x ./oci/
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
	return timedEnv(b, nil, dir, name, args...)
}

// timedEnv is timed with env added to the command's environment.
func timedEnv(b *testing.B, env []string, dir string, name string, args ...string) (time.Duration, float64) {
	b.Helper()
	syscall.Sync()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
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
	shm := tmpfsDir(b, size)
	mb := float64(fi.Size()) / 1e6
	dir := filepath.Dir(img)
	base := filepath.Base(img)
	var pushUs, pushOras, pushBase series
	var rssPush, rssFetch float64
	// BENCH_PUSH_BASE names another sysext binary (e.g. built from main)
	// whose push is timed in the same rounds: a change's push side by side.
	pushBin := os.Getenv("BENCH_PUSH_BASE")
	b.ResetTimer()
	// Pushes first: fresh repositories, so every byte is uploaded; who
	// goes first alternates (the second upload of a blob the registry
	// already has is deleted by it).
	for i := 0; i < b.N; i++ {
		runtime.GC()
		ours := func() {
			d, rss := timed(b, dir, sysext, "push", "-q", img, reg.Ref(fmt.Sprintf("bench/ours%d:1", i)))
			pushUs.add(d)
			rssPush = max(rssPush, rss)
		}
		theirs := func() {
			d, _ := timed(b, dir, oras, "push", "--plain-http", "--no-tty", reg.Ref(fmt.Sprintf("bench/oras%d:1", i)), base+":"+oci.MediaTypeSquashfs)
			pushOras.add(d)
		}
		steps := []func(){ours, theirs}
		if pushBin != "" {
			steps = append(steps, func() {
				d, _ := timed(b, dir, pushBin, "push", "-q", img, reg.Ref(fmt.Sprintf("bench/base%d:1", i)))
				pushBase.add(d)
			})
		}
		for j := range steps {
			steps[(i+j)%len(steps)]()
		}
	}
	// Then, side by side in each round (who goes first rotates): fetch
	// and oras pull onto the disk and into tmpfs, and the floors any
	// fetch has here: the disk (plain writes and one fsync; and our
	// writer alone, without network and hash), SHA-256, and the network
	// (the blob from the registry into nothing). This disk's speed drifts
	// by 2x within minutes, so the floors are taken in every round.
	var floor floors
	var fetchDisk, fetchShm, orasDisk, orasShm, fetchVar series
	variant := os.Getenv("BENCH_VARIANT")
	var syncOras time.Duration
	floorDir := b.TempDir()
	tg, res := resolveBench(b, reg, "bench/ours0:1")
	warmUp(b, sysext, oras, reg.Ref("bench/ours0:1"), base, "")
	for i := 0; i < b.N; i++ {
		ref := reg.Ref(fmt.Sprintf("bench/ours%d:1", i))
		steps := []func(){
			func() {
				d, dOras, rss, dSync := fetchPair(b, i, sysext, oras, ref, base, "")
				fetchDisk.add(d)
				orasDisk.add(dOras)
				syncOras += dSync
				rssFetch = max(rssFetch, rss)
			},
			func() {
				d, dOras, rss, _ := fetchPair(b, i, sysext, oras, ref, base, shm)
				fetchShm.add(d)
				orasShm.add(dOras)
				rssFetch = max(rssFetch, rss)
			},
			func() { floor.add(b, floorDir, i, fi.Size(), reg, tg, res) },
		}
		if variant != "" {
			// An experiment: our fetch onto the disk with variant in its
			// environment, as a step of its own.
			steps = append(steps, func() {
				out := b.TempDir()
				d, _ := timedEnv(b, strings.Fields(variant), out, sysext, "fetch", "-q", "--insecure-allow-unsigned", ref, "-o", out)
				fetchVar.add(d)
				os.RemoveAll(out)
			})
		}
		for j := range steps {
			steps[(i+j)%len(steps)]()
		}
	}
	b.StopTimer()
	n := float64(b.N)
	rate := func(d time.Duration) float64 { return mb * n / d.Seconds() }
	floor.report(b, mb*n)
	b.ReportMetric(rate(fetchDisk.sum), "sysext-fetch-MB/s")
	b.ReportMetric(rate(orasDisk.sum), "oras-pull-MB/s")
	b.ReportMetric(rate(fetchShm.sum), "sysext-fetch-tmpfs-MB/s")
	b.ReportMetric(rate(orasShm.sum), "oras-pull-tmpfs-MB/s")
	// Each ratio twice: over all rounds, and of the median rounds
	// (-median), which a machine that others share, with its load
	// swinging within seconds, disturbs less than it does the sums.
	ratio := func(name string, num, den series) {
		b.ReportMetric(num.sum.Seconds()/den.sum.Seconds(), name)
		b.ReportMetric(num.median().Seconds()/den.median().Seconds(), name+"-median")
	}
	ratio("fetch-ratio", orasDisk, fetchDisk)
	ratio("fetch-ratio-tmpfs", orasShm, fetchShm)
	// What the disk costs our fetch, durably: its time into tmpfs over
	// its time onto the disk.
	ratio("fetch-disk-of-tmpfs", fetchShm, fetchDisk)
	if variant != "" {
		b.ReportMetric(rate(fetchVar.sum), "variant-fetch-MB/s")
		ratio("variant-of-fetch", fetchDisk, fetchVar)
		ratio("variant-disk-of-tmpfs", fetchShm, fetchVar)
		ratio("variant-ratio", orasDisk, fetchVar)
	}
	// oras pull followed by an fsync of what it wrote: the same durable
	// result as our fetch.
	b.ReportMetric((orasDisk.sum+syncOras).Seconds()/fetchDisk.sum.Seconds(), "fetch-ratio-durable")
	// How close the fetch comes to the slowest of its floors.
	b.ReportMetric(floor.lowest().Seconds()/fetchDisk.sum.Seconds(), "fetch-of-floor")
	b.ReportMetric(rate(pushUs.sum), "sysext-push-MB/s")
	b.ReportMetric(rate(pushOras.sum), "oras-push-MB/s")
	ratio("push-ratio", pushOras, pushUs)
	if pushBin != "" {
		ratio("push-ratio-base", pushOras, pushBase)
		ratio("push-base-of-ours", pushBase, pushUs)
	}
	b.ReportMetric(rssFetch, "fetch-peak-RSS-MiB")
	b.ReportMetric(rssPush, "push-peak-RSS-MiB")
}

// series is one side's times over the rounds: their sum and each.
type series struct {
	sum time.Duration
	all []time.Duration
}

func (s *series) add(d time.Duration) {
	s.sum += d
	s.all = append(s.all, d)
}

// median is the middle round's time (the mean of the two middle ones).
func (s *series) median() time.Duration {
	d := slices.Clone(s.all)
	slices.Sort(d)
	n := len(d)
	if n == 0 {
		return 0
	}
	return (d[(n-1)/2] + d[n/2]) / 2
}

// floors are the times the parts of a durable fetch take alone, summed
// over the rounds.
type floors struct {
	disk, writer, hash, network time.Duration
}

// add measures each floor once for an image of size bytes.
func (f *floors) add(b *testing.B, dir string, i int, size int64, reg *ocitest.Registry, tg oci.Target, res *oci.Resolved) {
	b.Helper()
	f.disk += diskFloor(b, filepath.Join(dir, fmt.Sprint("plain", i)), size, false)
	f.writer += diskFloor(b, filepath.Join(dir, fmt.Sprint("writer", i)), size, true)
	f.hash += hashFloor(size)
	f.network += networkFloor(b, reg, res)
}

// lowest is the slowest floor's time: no durable fetch can be faster.
func (f *floors) lowest() time.Duration { return max(f.disk, f.hash, f.network) }

func (f *floors) report(b *testing.B, mb float64) {
	b.ReportMetric(mb/f.disk.Seconds(), "disk-write+fsync-MB/s")
	b.ReportMetric(mb/f.writer.Seconds(), "disk-ingest-writer-MB/s")
	b.ReportMetric(mb/f.hash.Seconds(), "sha256-MB/s")
	b.ReportMetric(mb/f.network.Seconds(), "network-MB/s")
}

// tmpfsDir is /dev/shm when it is a tmpfs with room for two images of
// size bytes; the benchmark is skipped otherwise.
func tmpfsDir(b *testing.B, size int64) string {
	b.Helper()
	var st unix.Statfs_t
	if err := unix.Statfs("/dev/shm", &st); err != nil || st.Type != unix.TMPFS_MAGIC {
		b.Skip("/dev/shm is not a tmpfs here: this benchmark needs one for its outputs")
	}
	if st.Bavail*uint64(st.Bsize) < uint64(3*size) {
		b.Skipf("/dev/shm has less than %d MiB free: this benchmark needs room for two outputs", 3*size>>20)
	}
	return "/dev/shm"
}

// hashFloor is how long SHA-256 of size bytes takes here.
func hashFloor(size int64) time.Duration {
	buf := make([]byte, 1<<20)
	rand.NewChaCha8([32]byte{4}).Read(buf)
	h := sha256.New()
	start := time.Now()
	for n := int64(0); n < size; n += int64(len(buf)) {
		h.Write(buf)
	}
	h.Sum(nil)
	return time.Since(start)
}

// networkFloor is how long the registry takes to send the blob over
// loopback into nothing (one GET, as oras and our stream do).
func networkFloor(b *testing.B, reg *ocitest.Registry, res *oci.Resolved) time.Duration {
	b.Helper()
	url := fmt.Sprintf("%s/v2/bench/ours0/blobs/%s", reg.URL, res.Entry.Layer.Digest)
	start := time.Now()
	resp, err := http.Get(url)
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	buf := make([]byte, 1<<20)
	if n, err := io.CopyBuffer(io.Discard, resp.Body, buf); err != nil || n != res.Entry.Layer.Size {
		b.Fatalf("GET %s: %d bytes, %v", url, n, err)
	}
	return time.Since(start)
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

// diskFloor writes size bytes of random data durably at path and returns
// how long it took: with plain writes and one fsync at the end (the disk's
// own floor), or with our writer as Download uses it (oci.DurableWrite:
// reserved, written back and flushed as it goes), without the network and
// the hash.
func diskFloor(b *testing.B, path string, size int64, ours bool) time.Duration {
	b.Helper()
	buf := make([]byte, 1<<20)
	rand.NewChaCha8([32]byte{2}).Read(buf) // not zeros: a virtual disk may shortcut those
	syscall.Sync()
	start := time.Now()
	if ours {
		if err := oci.DurableWrite(path, buf, size); err != nil {
			b.Fatal(err)
		}
		// The file stays (its directory goes at the end): deleting it
		// here would have the disk discard it while the next fetches run.
		return time.Since(start)
	}
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	for n := int64(0); n < size; n += int64(len(buf)) {
		if _, err := f.Write(buf[:min(int64(len(buf)), size-n)]); err != nil {
			b.Fatal(err)
		}
	}
	if err := f.Sync(); err != nil {
		b.Fatal(err)
	}
	return time.Since(start)
}
