package ingest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"
)

func blob(n int) []byte {
	b := make([]byte, n)
	rand.NewChaCha8([32]byte{7}).Read(b)
	return b
}

// feed writes and hashes b[from:to] in chunk-sized pieces, in order, as a
// download does.
func feed(t *testing.T, w *Writer, b []byte, from, to, chunk int) {
	t.Helper()
	for off := from; off < to; off += chunk {
		end := min(off+chunk, to)
		if _, err := w.WriteAt(b[off:end], int64(off)); err != nil {
			t.Fatal(err)
		}
		w.HashAt(b[off:end], int64(off))
	}
}

func mustOpen(t *testing.T, dir string, b []byte) *Writer {
	t.Helper()
	w, err := Open(context.Background(), dir, int64(len(b)), digest.FromBytes(b))
	if err != nil {
		t.Fatal(err)
	}
	return w
}

func mustSum(t *testing.T, w *Writer, b []byte) {
	t.Helper()
	got, err := w.Sum(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if got != digest.FromBytes(b) {
		t.Fatalf("sum %s, want %s", got, digest.FromBytes(b))
	}
	data, err := os.ReadFile(w.Name())
	if err != nil || !bytes.Equal(data, b) {
		t.Fatalf("the data file differs from the blob (%v)", err)
	}
}

func TestRanges(t *testing.T) {
	var rs Ranges
	for _, r := range [][2]int64{{10, 20}, {30, 40}, {0, 5}, {5, 10}, {20, 25}, {35, 50}, {60, 70}} {
		rs.Add(r[0], r[1])
	}
	want := Ranges{{0, 25}, {30, 50}, {60, 70}}
	if len(rs) != len(want) {
		t.Fatalf("%v, want %v", rs, want)
	}
	for i := range want {
		if rs[i] != want[i] {
			t.Fatalf("%v, want %v", rs, want)
		}
	}
	if rs.Prefix() != 25 || rs.Total() != 55 {
		t.Fatalf("prefix %d total %d", rs.Prefix(), rs.Total())
	}
	miss := rs.Missing(80)
	if len(miss) != 3 || miss[0] != (Range{25, 30}) || miss[2] != (Range{70, 80}) {
		t.Fatalf("missing %v", miss)
	}
	rs.Add(0, 80)
	if len(rs) != 1 || rs.Missing(80) != nil {
		t.Fatalf("%v", rs)
	}
}

// A writer that stops half-way (the process was killed: nothing after the
// last write ran) is resumed by the next Open at the bytes it wrote, with
// its hash state: the first half is neither written nor hashed again.
func TestResumeAfterKill(t *testing.T) {
	b := blob(5<<20 + 123)
	dir := filepath.Join(t.TempDir(), "ingest")
	w := mustOpen(t, dir, b)
	feed(t, w, b, 0, 3<<20, 1<<20)
	w.Close() // what a kill leaves: the record as it was appended
	finishFrom(t, dir, b, 3<<20)
}

// finishFrom reopens dir, checks that it resumes at at, with the hash
// there too, writes the rest and checks the sum.
func finishFrom(t *testing.T, dir string, b []byte, at int) {
	t.Helper()
	w := mustOpen(t, dir, b)
	defer w.Close()
	if w.Offset() != int64(at) || w.hashed != int64(at) {
		t.Fatalf("resumed at %d, hashed %d; want %d", w.Offset(), w.hashed, at)
	}
	feed(t, w, b, at, len(b), 1<<20)
	mustSum(t, w, b)
}

// The hashing stage ran behind the writing stage when the process died:
// Open hashes the written bytes it had not reached, from the file.
func TestResumeHashBehind(t *testing.T) {
	b := blob(4 << 20)
	dir := filepath.Join(t.TempDir(), "ingest")
	w := mustOpen(t, dir, b)
	for off := 0; off < 3<<20; off += 1 << 20 {
		w.WriteAt(b[off:off+1<<20], int64(off))
	}
	w.HashAt(b[:1<<20], 0)
	w.Close()
	finishFrom(t, dir, b, 3<<20)
}

// After a reboot (another boot_id in the record) only the writes a "sync"
// line covers are trusted; a torn last line is ignored.
func TestResumeAfterRebootTrustsSynced(t *testing.T) {
	b := blob(40 << 20)
	dir := filepath.Join(t.TempDir(), "ingest")
	w := mustOpen(t, dir, b)
	feed(t, w, b, 0, 36<<20, 1<<20)
	w.Finish() // the flusher has recorded its syncs
	w.Close()
	log := filepath.Join(dir, logName)
	rec, err := os.ReadFile(log)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(rec, []byte(`"sync":`)) {
		t.Fatalf("no sync recorded after 36 MiB:\n%s", rec)
	}
	head, rest, _ := bytes.Cut(rec, []byte("\n"))
	l, ok := decodeLine(head)
	if !ok {
		t.Fatal("bad header")
	}
	l.Boot = "another-boot"
	torn := append(append(encodeLine(l), rest...), `{"w":[0,1`...)
	if err := os.WriteFile(log, torn, 0o600); err != nil {
		t.Fatal(err)
	}
	w = mustOpen(t, dir, b)
	defer w.Close()
	off := w.Offset()
	if off == 0 || off >= 36<<20 || off%(1<<20) != 0 {
		t.Fatalf("after a reboot resumed at %d: want a synced point below 36 MiB", off)
	}
	feed(t, w, b, int(off), len(b), 1<<20)
	mustSum(t, w, b)
}

// Out-of-order writes (a delta's local chunks and parallel ranges) are
// recorded and resumed as ranges; Sum hashes what HashAt did not see in
// order, from the file.
func TestOutOfOrderAndMissing(t *testing.T) {
	b := blob(3 << 20)
	dir := filepath.Join(t.TempDir(), "ingest")
	w := mustOpen(t, dir, b)
	w.WriteAt(b[2<<20:], 2<<20)
	w.WriteAt(b[:1<<20], 0)
	w.HashAt(b[:1<<20], 0)
	w.Close()
	w = mustOpen(t, dir, b)
	defer w.Close()
	if m := w.Missing(); len(m) != 1 || m[0] != (Range{1 << 20, 2 << 20}) || w.Offset() != 1<<20 {
		t.Fatalf("missing %v, offset %d", m, w.Offset())
	}
	if _, err := w.Sum(context.Background()); !errors.Is(err, ErrIncomplete) {
		t.Fatalf("sum with a hole: %v", err)
	}
	w.Close()
	w = mustOpen(t, dir, b)
	defer w.Close()
	w.WriteAt(b[1<<20:2<<20], 1<<20) // not hashed: Sum reads it back
	mustSum(t, w, b)
}

// A data file that was committed (linked into a store) is never written
// again: Open starts afresh and the committed file keeps its bytes.
func TestCommittedDataNeverRewritten(t *testing.T) {
	b := blob(2 << 20)
	dir := filepath.Join(t.TempDir(), "ingest")
	w := mustOpen(t, dir, b)
	feed(t, w, b, 0, 1<<20, 1<<20)
	w.Close()
	stored := filepath.Join(filepath.Dir(dir), "stored")
	if err := os.Link(filepath.Join(dir, dataName), stored); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(stored)
	finishFrom(t, dir, b, 0)
	if after, _ := os.ReadFile(stored); !bytes.Equal(before, after) {
		t.Fatal("the committed file changed")
	}
}

// A record for another blob (or none) starts afresh; a write beyond the
// blob's size is refused.
func TestOtherBlobStartsAfresh(t *testing.T) {
	b := blob(1 << 20)
	dir := filepath.Join(t.TempDir(), "ingest")
	w := mustOpen(t, dir, b)
	feed(t, w, b, 0, 512<<10, 256<<10)
	w.Close()
	other := blob(1<<20 + 1)
	w = mustOpen(t, dir, other)
	defer w.Close()
	if w.Offset() != 0 {
		t.Fatalf("another blob's record resumed at %d", w.Offset())
	}
	if _, err := w.WriteAt(make([]byte, 2), int64(len(other)-1)); err == nil || !strings.Contains(err.Error(), "do not fit") {
		t.Fatalf("write beyond the end: %v", err)
	}
}

// New (no record) writes and hashes as Open does.
func TestNewWithoutRecord(t *testing.T) {
	b := blob(3<<20 + 5)
	f, err := os.Create(filepath.Join(t.TempDir(), "out"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	w, err := New(f, int64(len(b)), digest.FromBytes(b))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	feed(t, w, b, 0, len(b), 1<<20)
	mustSum(t, w, b)
	if ents, _ := os.ReadDir(filepath.Dir(f.Name())); len(ents) != 1 {
		t.Fatalf("New left %d files", len(ents))
	}
}

// Writes from several goroutines at once, out of order (parallel ranges),
// are all recorded: a stopped writer resumes with exactly the pieces not
// written; HashTo hashes written bytes from the file as the prefix reaches
// them and refuses to pass a gap.
func TestParallelWritesResume(t *testing.T) {
	const piece = 1 << 20
	b := blob(40 * piece)
	dir := filepath.Join(t.TempDir(), "ingest")
	w := mustOpen(t, dir, b)
	skip := map[int]bool{3: true, 17: true, 18: true, 39: true}
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 39 - g; i >= 0; i -= 8 { // back to front, interleaved
				if !skip[i] {
					if _, err := w.WriteAt(b[i*piece:(i+1)*piece], int64(i*piece)); err != nil {
						t.Error(err)
					}
				}
			}
		}()
	}
	wg.Wait()
	if err := w.HashTo(context.Background(), 3*piece); err != nil || w.Hashed() != 3*piece {
		t.Fatalf("HashTo the first gap: %v, hashed %d", err, w.Hashed())
	}
	if err := w.HashTo(context.Background(), 5*piece); !errors.Is(err, ErrIncomplete) {
		t.Fatalf("HashTo across a gap: %v", err)
	}
	w.Close()
	w = mustOpen(t, dir, b)
	defer w.Close()
	want := []Range{{3 * piece, 4 * piece}, {17 * piece, 19 * piece}, {39 * piece, 40 * piece}}
	if got := w.Missing(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("missing %v, want %v", got, want)
	}
	if w.Hashed() != 3*piece {
		t.Fatalf("resumed with %d hashed, want the %d hashed before", w.Hashed(), 3*piece)
	}
	for _, r := range want {
		if _, err := w.WriteAt(b[r.Off:r.End], r.Off); err != nil {
			t.Fatal(err)
		}
	}
	mustSum(t, w, b)
}

// On a filesystem with O_DIRECT the writer asks for several writes in
// flight and writes aligned pieces straight to the disk; pieces that are
// not aligned (an odd offset, an odd buffer address, the blob's tail) go
// through the page cache, and the file holds every byte either way. On
// tmpfs, which has no O_DIRECT, it writes through the page cache alone.
func TestDirectAndBufferedWrites(t *testing.T) {
	const piece = 1 << 20
	b := blob(9*piece + 4096 + 77)
	// An unaligned copy of piece 2 (its address is off by one).
	odd := make([]byte, piece+1)[1:]
	copy(odd, b[2*piece:3*piece])
	dirs := map[string]int{t.TempDir(): directWriters}
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() && onTmpfs("/dev/shm") {
		d, err := os.MkdirTemp("/dev/shm", "ingest-test-")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(d) })
		dirs[d] = 1
	}
	for dir, want := range dirs {
		if onTmpfs(dir) && want != 1 {
			t.Logf("%s is a tmpfs: only the page cache path is tested", dir)
			want = 1
		}
		t.Run(filepath.Base(dir), func(t *testing.T) {
			w := mustOpen(t, filepath.Join(dir, "ingest"), b)
			defer w.Close()
			if got := w.WriteConcurrency(); got != want {
				t.Fatalf("WriteConcurrency %d on %s, want %d", got, dir, want)
			}
			var wg sync.WaitGroup
			write := func(p []byte, off int) {
				defer wg.Done()
				if _, err := w.WriteAt(p, int64(off)); err != nil {
					t.Error(err)
				}
			}
			wg.Add(6)
			go write(b[:piece], 0)
			go write(b[piece:piece+100], piece)       // odd length
			go write(b[piece+100:2*piece], piece+100) // odd offset
			go write(odd, 2*piece)                    // odd address
			go write(b[3*piece:9*piece], 3*piece)
			go write(b[9*piece:], 9*piece) // the tail
			wg.Wait()
			mustSum(t, w, b)
		})
	}
}

func onTmpfs(dir string) bool {
	var st unix.Statfs_t
	return unix.Statfs(dir, &st) == nil && st.Type == unix.TMPFS_MAGIC
}
