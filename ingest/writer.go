package ingest

import (
	"context"
	"crypto/sha256"
	"encoding"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"

	"github.com/sysext/sysext/atomicfile"
)

// writebackChunk is how much dirty data the writer lets pile up before it
// asks the kernel to start writing it out (sync_file_range, not waiting).
// How much written data may wait for an fdatasync adapts to the disk
// (flushPolicy): the first after syncChunk, each next one sized to take
// about syncTarget at the rate the last one showed, within syncChunk and
// maxSyncChunk. Why flush as we go at all: a disk with a write cache (any
// virtual disk) acknowledges the writes and persists them at the cache
// flush, so a single fsync at the end waits for the whole image (273 ms of
// a 512 MiB write here). Why not every 16 MiB as before: each fdatasync
// costs a journal commit and a cache flush, 12-40 ms on this VM whatever
// its size, which on a fast disk made the flushing the slower side; sized
// to 50 ms it comes to 64-256 MiB here, and stays at 16 MiB on a disk that
// persists slowly. After a reboot at most the last interval is fetched
// again (the record trusts only synced writes then).
const (
	writebackChunk = 8 << 20
	syncChunk      = 16 << 20
	maxSyncChunk   = 256 << 20
	syncTarget     = 50 * time.Millisecond
)

// readBackSize is the buffer Sum and Open hash file contents with.
const readBackSize = 1 << 20

// ErrIncomplete says Sum was called before every byte was written.
var ErrIncomplete = errors.New("the blob is not completely written")

// Writer writes one blob of a known size and digest into a file. WriteAt
// takes bytes at any offset, from several goroutines at once when the
// ranges do not overlap; HashAt takes the same bytes for the digest, and
// HashTo hashes bytes from the file. WriteAt may run concurrently with the
// hashing stage (HashAt, HashTo), which alone must not be called
// concurrently. Sum ends the writing and returns the digest of the whole
// file.
//
// With a record (Open) the writer also appends what it wrote and hashed to
// a log next to the data, so that Open in a later process resumes where
// this one stopped.
type Writer struct {
	f       *os.File
	ownFile bool
	size    int64
	want    digest.Digest
	dir     string // "" without a record

	mu      sync.Mutex
	log     *os.File // the record; nil without one or after it failed
	written Ranges
	wlines  int   // "w" lines in the record
	werr    error // the first write error

	// The hashing stage's; Sum's once the stages are done.
	h      hash.Hash
	hashed int64

	fl       *flusher
	direct   atomic.Int64 // an O_DIRECT descriptor of f for aligned writes; -1 without
	directFD int          // the one opened, for Close; -1 without
	finished bool
	sum      digest.Digest
}

// New writes a blob of size bytes with digest want ("" when unknown) into
// f, a new, empty file that the caller commits and closes. It reserves the
// space first, so a full disk fails now rather than at 90%. There is no
// record: a killed write starts again from nothing.
func New(f *os.File, size int64, want digest.Digest) (*Writer, error) {
	if err := checkDigest(want, true); err != nil {
		return nil, err
	}
	if err := reserve(f, size); err != nil {
		return nil, fmt.Errorf("reserve %d bytes: %w", size, err)
	}
	w := &Writer{f: f, size: size, want: want, h: sha256.New(), directFD: -1}
	w.openDirect()
	w.startFlusher()
	return w, nil
}

// directAlign is what the buffer address, offset and length of a write
// through the O_DIRECT descriptor must be multiples of (the page size
// covers any logical block size up to 4 KiB; a disk that wants more fails
// the write with EINVAL, and the writer falls back to the page cache).
const directAlign = 4096

// directWriters is how many writes a caller should keep in flight when the
// writer writes with O_DIRECT (see WriteConcurrency).
const directWriters = 4

// useDirect is whether writers try O_DIRECT; tests turn it off.
var useDirect = true

// openDirect opens a second descriptor of the data file with O_DIRECT, so
// that aligned writes go straight to the disk: the page cache is bypassed,
// the disk works while the network reads, and the fdatasyncs have little
// left to do. Measured in oci's loopback benchmark (256 MiB, 8 rounds,
// median): a durable fetch onto the disk 1.44x as fast as through the page
// cache with four writes in flight, 1.12x with one. Where the filesystem
// refuses O_DIRECT (ext4 with data=journal) or where the page cache is the
// storage (tmpfs, which takes O_DIRECT since Linux 6.6 but gains nothing
// from it) the page cache does it all, as before.
func (w *Writer) openDirect() {
	w.direct.Store(-1)
	if !useDirect {
		return
	}
	var st unix.Statfs_t
	if err := unix.Fstatfs(int(w.f.Fd()), &st); err != nil || st.Type == unix.TMPFS_MAGIC || st.Type == unix.RAMFS_MAGIC {
		return
	}
	fd, err := unix.Open(fmt.Sprintf("/proc/self/fd/%d", w.f.Fd()), unix.O_WRONLY|unix.O_DIRECT|unix.O_CLOEXEC, 0)
	if err != nil {
		return
	}
	w.direct.Store(int64(fd))
	w.directFD = fd
}

// WriteConcurrency is how many WriteAt calls the caller should keep in
// flight for the disk to be busy: several when writes go straight to the
// disk (each waits for it), one through the page cache (where more only
// contend: 0.65x measured with four).
func (w *Writer) WriteConcurrency() int {
	if w.direct.Load() >= 0 {
		return directWriters
	}
	return 1
}

// aligned reports whether p at off can be written with O_DIRECT.
func aligned(p []byte, off int64) bool {
	return len(p) > 0 && len(p)%directAlign == 0 && off%directAlign == 0 &&
		uintptr(unsafe.Pointer(&p[0]))%directAlign == 0
}

// pwrite writes p at off, straight to the disk when it can: an unaligned
// write (the blob's tail, a resumed start) goes through the page cache,
// and a filesystem that refuses a direct write (EINVAL: it wants another
// alignment, or no O_DIRECT after all) has every later write go there too.
func (w *Writer) pwrite(p []byte, off int64) (int, error) {
	fd := int(w.direct.Load())
	if fd < 0 || !aligned(p, off) {
		return w.f.WriteAt(p, off)
	}
	n := 0
	for n < len(p) {
		m, err := unix.Pwrite(fd, p[n:], off+int64(n))
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EINVAL:
			w.direct.CompareAndSwap(int64(fd), -1) // closed by Close
			k, err := w.f.WriteAt(p[n:], off+int64(n))
			return n + k, err
		case err != nil:
			return n, &os.PathError{Op: "write", Path: w.f.Name(), Err: err}
		case m == 0:
			return n, io.ErrShortWrite
		}
		n += m
	}
	return n, nil
}

// Open starts writing a blob of size bytes with digest want into dir (made
// when missing), or resumes what an earlier writer left there: the bytes
// its record says are written, and its hash state, so that the bytes
// before Offset are neither fetched nor hashed again. A data file that has
// been committed (it has another link) is never written again: the ingest
// starts afresh. Close keeps dir; removing it is the caller's.
func Open(ctx context.Context, dir string, size int64, want digest.Digest) (*Writer, error) {
	if err := checkDigest(want, false); err != nil {
		return nil, err
	}
	if size < 0 {
		return nil, fmt.Errorf("ingest %s: negative size %d", want, size)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("ingest: %w", err)
	}
	if err := atomicfile.RemoveTemps(dir); err != nil {
		return nil, fmt.Errorf("ingest: %w", err)
	}
	boot := bootID()
	w := &Writer{size: size, want: want, dir: dir, ownFile: true, h: sha256.New(), directFD: -1}
	p, ok, err := readRecord(filepath.Join(dir, logName), size, want, boot)
	if err != nil {
		return nil, fmt.Errorf("ingest %s: %w", dir, err)
	}
	data := filepath.Join(dir, dataName)
	if ok {
		w.f, err = os.OpenFile(data, os.O_RDWR|syscall.O_NOFOLLOW, 0)
		if err == nil && !resumable(w.f, size) {
			w.f.Close()
			w.f = nil
		}
	}
	if w.f != nil {
		w.written = p.written
		err = w.resume(ctx, p)
	} else {
		err = w.start(data)
	}
	if err != nil {
		w.Close()
		return nil, err
	}
	if err := w.rewriteRecord(boot); err != nil {
		w.Close()
		return nil, err
	}
	w.openDirect()
	w.startFlusher()
	return w, nil
}

// resumable reports whether f is an uncommitted data file of size bytes.
func resumable(f *os.File, size int64) bool {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return false
	}
	return st.Mode&unix.S_IFMT == unix.S_IFREG && st.Nlink == 1 && st.Size == size
}

// start creates a fresh data file with its space reserved.
func (w *Writer) start(data string) error {
	// Only this name goes: a committed file linked elsewhere stays intact.
	if err := os.Remove(data); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("ingest: %w", err)
	}
	f, err := os.OpenFile(data, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("ingest: %w", err)
	}
	w.f = f
	if err := reserve(f, w.size); err != nil {
		return fmt.Errorf("%s: reserve %d bytes: %w", data, w.size, err)
	}
	return nil
}

// resume restores the hash state the record holds and hashes, from the
// file, the written bytes it did not cover (the hashing stage ran behind
// the writing one, or the state is from an older Go), so that hashing goes
// on in order from Offset.
func (w *Writer) resume(ctx context.Context, p progress) error {
	if p.state != nil {
		if u, ok := w.h.(encoding.BinaryUnmarshaler); ok && u.UnmarshalBinary(p.state) == nil {
			w.hashed = p.hashed
		} else {
			w.h.Reset()
		}
	}
	return w.hashFile(ctx, w.written.Prefix())
}

// hashFile hashes the file from the hashed prefix up to end, saving the
// hash state in the record every readBackSize bytes (as HashAt does per
// chunk), so a crash during a long read-back loses little.
func (w *Writer) hashFile(ctx context.Context, end int64) error {
	if w.hashed >= end {
		return nil
	}
	buf := make([]byte, readBackSize)
	for w.hashed < end {
		if err := ctx.Err(); err != nil {
			return err
		}
		n := int(min(int64(len(buf)), end-w.hashed))
		m, err := w.f.ReadAt(buf[:n], w.hashed)
		w.h.Write(buf[:m])
		w.hashed += int64(m)
		if err != nil && !(errors.Is(err, io.EOF) && m == n) {
			return fmt.Errorf("ingest: read back %s: %w", w.f.Name(), err)
		}
		w.saveHash()
	}
	return nil
}

// HashTo hashes, from the file, the bytes from where the in-order hash
// stands up to end: bytes that were written out of order (parallel ranges)
// or before a resume, once the bytes before them are hashed. It is the
// hashing stage's, like HashAt, and fails when a byte in between is not
// written yet.
func (w *Writer) HashTo(ctx context.Context, end int64) error {
	if end <= w.hashed {
		return nil
	}
	w.mu.Lock()
	ok := w.written.Covers(w.hashed, end)
	w.mu.Unlock()
	if !ok {
		return fmt.Errorf("ingest: %s: hash up to %d: %w", w.f.Name(), end, ErrIncomplete)
	}
	return w.hashFile(ctx, end)
}

// Hashed is where the in-order hash stands: [0, Hashed) is hashed.
func (w *Writer) Hashed() int64 { return w.hashed }

// rewriteRecord makes what the writer trusts durable and replaces the
// record with a compact one that says so, in this boot's name: the data
// first (fdatasync), then the record (atomically), so the record never
// claims more than the disk holds.
func (w *Writer) rewriteRecord(boot string) error {
	if err := unix.Fdatasync(int(w.f.Fd())); err != nil {
		return fmt.Errorf("ingest: fsync %s: %w", w.f.Name(), err)
	}
	b := encodeLine(line{Ingest: recordVersion, Size: w.size, Digest: w.want, Boot: boot})
	for _, r := range w.written {
		b = append(b, encodeLine(line{W: &[2]int64{r.Off, r.End - r.Off}})...)
	}
	n := len(w.written)
	b = append(b, encodeLine(line{Sync: &n})...)
	if w.hashed > 0 {
		if state, err := w.h.(encoding.BinaryMarshaler).MarshalBinary(); err == nil {
			b = append(b, encodeLine(line{H: &w.hashed, State: state})...)
		}
	}
	path := filepath.Join(w.dir, logName)
	if err := atomicfile.WriteFile(path, b, 0o600); err != nil {
		return fmt.Errorf("ingest: %w", err)
	}
	log, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return fmt.Errorf("ingest: %w", err)
	}
	w.log, w.wlines = log, n
	return nil
}

// appendRecord adds l to the record; w.mu is held. A record that cannot be
// written stops being written: the next Open resumes from what it holds.
func (w *Writer) appendRecord(l line) bool {
	if w.log == nil {
		return false
	}
	if _, err := w.log.Write(encodeLine(l)); err != nil {
		w.log.Close()
		w.log = nil
		return false
	}
	return true
}

// Name is the data file's path.
func (w *Writer) Name() string { return w.f.Name() }

// Size is the blob's size.
func (w *Writer) Size() int64 { return w.size }

// Offset is where the bytes written from the start stop: [0, Offset) is
// written and hashed (after Open, before any HashAt), so a sequential
// download goes on from there.
func (w *Writer) Offset() int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.written.Prefix()
}

// Missing lists the ranges not written yet.
func (w *Writer) Missing() []Range {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.written.Missing(w.size)
}

// Written is how many bytes are written.
func (w *Writer) Written() int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.written.Total()
}

// Failed reports whether a write failed (a full disk, an I/O error): what
// the file holds is then not worth resuming.
func (w *Writer) Failed() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.werr != nil
}

// WriteAt writes p at off, inside the blob, and records it.
func (w *Writer) WriteAt(p []byte, off int64) (int, error) {
	if off < 0 || off > w.size-int64(len(p)) {
		return 0, fmt.Errorf("%s: %d bytes at %d do not fit the blob's %d", w.f.Name(), len(p), off, w.size)
	}
	n, err := w.pwrite(p, off)
	end := off + int64(n)
	w.mu.Lock()
	if n > 0 {
		w.written.Add(off, end)
		if w.appendRecord(line{W: &[2]int64{off, int64(n)}}) {
			w.wlines++
		}
	}
	if err != nil && w.werr == nil {
		w.werr = err
	}
	w.mu.Unlock()
	if err == nil {
		w.fl.wrote(off, end)
	}
	return n, err
}

// HashAt hashes p, the bytes at off, when they continue the hashed prefix
// (the bytes arrive in order); other bytes are hashed from the file, by
// HashTo as the prefix reaches them or by Sum.
func (w *Writer) HashAt(p []byte, off int64) {
	if off != w.hashed || len(p) == 0 {
		return
	}
	w.h.Write(p)
	w.hashed += int64(len(p))
	w.saveHash()
}

// saveHash appends the hash state to the record.
func (w *Writer) saveHash() {
	if w.dir == "" {
		return
	}
	state, err := w.h.(encoding.BinaryMarshaler).MarshalBinary()
	if err != nil {
		return
	}
	n := w.hashed
	w.mu.Lock()
	w.appendRecord(line{H: &n, State: state})
	w.mu.Unlock()
}

// Finish ends the writing: it stops the flusher and cuts the file to the
// blob's size (the reservation may be larger). It returns the first write
// error.
func (w *Writer) Finish() error {
	if w.finished {
		return w.werr
	}
	w.finished = true
	w.fl.stop()
	if w.werr != nil {
		return w.werr
	}
	st, err := w.f.Stat()
	if err != nil {
		return err
	}
	if st.Size() != w.size {
		return w.f.Truncate(w.size)
	}
	return nil
}

// Sum ends the writing and returns the sha256 of the whole blob, hashing
// from the file only the bytes HashAt did not see in order. It fails with
// ErrIncomplete when some bytes are not written. Call it after the writing
// and hashing stages are done.
func (w *Writer) Sum(ctx context.Context) (digest.Digest, error) {
	if w.sum != "" {
		return w.sum, nil
	}
	if err := w.Finish(); err != nil {
		return "", fmt.Errorf("write %s: %w", w.f.Name(), err)
	}
	if miss := w.written.Missing(w.size); len(miss) > 0 {
		return "", fmt.Errorf("%s: %w: %d of %d bytes missing, from %d on", w.f.Name(), ErrIncomplete, w.size-w.written.Total(), w.size, miss[0].Off)
	}
	if err := w.hashFile(ctx, w.size); err != nil {
		return "", err
	}
	w.sum = digest.NewDigest(digest.SHA256, w.h)
	return w.sum, nil
}

// Sync makes the data durable (fsync).
func (w *Writer) Sync() error {
	if err := w.f.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", w.f.Name(), err)
	}
	return nil
}

// Close stops the flusher and closes the record, and the data file when
// Open made it. It keeps both on disk.
func (w *Writer) Close() error {
	if w.fl != nil {
		w.fl.stop()
	}
	w.direct.Store(-1)
	if w.directFD >= 0 {
		unix.Close(w.directFD)
		w.directFD = -1
	}
	w.mu.Lock()
	if w.log != nil {
		w.log.Close()
		w.log = nil
	}
	w.mu.Unlock()
	if w.ownFile && w.f != nil {
		return w.f.Close()
	}
	return nil
}

func checkDigest(d digest.Digest, emptyOK bool) error {
	if d == "" && emptyOK {
		return nil
	}
	if err := d.Validate(); err != nil {
		return fmt.Errorf("digest %q: %w", d, err)
	}
	if d.Algorithm() != digest.SHA256 {
		return fmt.Errorf("%s: only sha256 digests are supported", d)
	}
	return nil
}

// reserve allocates size bytes for f up front, so a full disk fails now,
// not at 90%; a filesystem without fallocate is left to fail on write.
func reserve(f *os.File, size int64) error {
	if size <= 0 {
		return nil
	}
	if err := unix.Fallocate(int(f.Fd()), 0, 0, size); err != nil && !errors.Is(err, unix.EOPNOTSUPP) {
		return err
	}
	return nil
}

// syncPolicy says how much written data the flusher lets wait for an
// fdatasync: first at the start, then, after a flush of n bytes that took
// d, next.
type syncPolicy struct {
	first  int64
	target time.Duration // 0: fixed at first
	max    int64
}

func (p syncPolicy) next(every, n int64, d time.Duration) int64 {
	if p.target <= 0 || d <= 0 {
		return every
	}
	return min(max(int64(float64(n)*p.target.Seconds()/d.Seconds()), p.first), p.max)
}

var flushPolicy = syncPolicy{first: syncChunk, target: syncTarget, max: maxSyncChunk}

// flusher has the kernel start writeback as the data arrives, from its own
// goroutine (sync_file_range blocks while the disk's queue is full, and the
// network must not wait for the disk), and makes it durable (fdatasync) now
// and then, recording after each that the writes before it are durable.
// Writes may come from several goroutines at once and at any offsets (the
// parallel ranges of a download): the flusher counts bytes and writes back
// the span they lie in. Writes through the O_DIRECT descriptor need no
// writeback; the fdatasync still makes them (and the extents) durable.
type flusher struct {
	mu      sync.Mutex
	pending int64 // bytes written since the last writeback request
	lo, hi  int64 // the span they lie in
	stopped bool
	kick    chan struct{}
	done    chan struct{}
}

func (w *Writer) startFlusher() {
	fl := &flusher{kick: make(chan struct{}, 1), done: make(chan struct{}), lo: -1}
	w.fl = fl
	fd := int(w.f.Fd())
	policy := flushPolicy
	go func() {
		defer close(fl.done)
		var unsynced int64
		every := policy.first
		for range fl.kick {
			fl.mu.Lock()
			lo, hi, n := fl.lo, fl.hi, fl.pending
			fl.lo, fl.hi, fl.pending = -1, 0, 0
			fl.mu.Unlock()
			if n == 0 {
				continue
			}
			// SYNC_FILE_RANGE_WRITE queues the writeback and returns; it is
			// best effort (not every filesystem supports it).
			_ = unix.SyncFileRange(fd, lo, hi-lo, unix.SYNC_FILE_RANGE_WRITE)
			unsynced += n
			if unsynced < every {
				continue
			}
			w.mu.Lock()
			k := w.wlines // written before the fdatasync starts: durable after it
			w.mu.Unlock()
			t0 := time.Now()
			// Errors show again at the final fsync, which decides.
			err := unix.Fdatasync(fd)
			every = policy.next(every, unsynced, time.Since(t0))
			unsynced = 0
			if err == nil && w.dir != "" {
				w.mu.Lock()
				w.appendRecord(line{Sync: &k})
				w.mu.Unlock()
			}
		}
	}()
}

// wrote tells the flusher that [off, end) is written; safe for concurrent
// use.
func (fl *flusher) wrote(off, end int64) {
	fl.mu.Lock()
	if fl.stopped {
		fl.mu.Unlock()
		return
	}
	fl.pending += end - off
	if fl.lo < 0 || off < fl.lo {
		fl.lo = off
	}
	fl.hi = max(fl.hi, end)
	if fl.pending >= writebackChunk {
		// Under mu, so that stop cannot close kick in between.
		select {
		case fl.kick <- struct{}{}:
		default: // the flusher is busy; it takes this range with the next
		}
	}
	fl.mu.Unlock()
}

// stop ends the flusher goroutine; safe to call twice.
func (fl *flusher) stop() {
	fl.mu.Lock()
	stopped := fl.stopped
	fl.stopped = true
	fl.mu.Unlock()
	if !stopped {
		close(fl.kick)
		<-fl.done
	}
}

// LastWrite is when the ingest in dir was last written (its record is
// appended to as the data arrives); false when dir holds no ingest.
func LastWrite(dir string) (time.Time, bool) {
	fi, err := os.Stat(filepath.Join(dir, logName))
	if err != nil {
		return time.Time{}, false
	}
	return fi.ModTime(), true
}
