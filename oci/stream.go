package oci

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/content"
)

// The download pipeline: one goroutine reads the network into a few
// buffers (resuming with a Range request when cut) and hands each to two
// stages that run independently, the hasher and the writer (both the
// Writer's: WriteAt and HashAt); the Writer starts writeback to the disk as
// it goes. Memory stays at streamBuffers × streamBufSize whatever the image
// size. Eight buffers were a little faster than four into tmpfs (256 MiB,
// median 0.449 s against 0.464 s).
const (
	streamBufSize = 1 << 20
	streamBuffers = 8
)

// headSize is how much of the start of the image the magic check reads
// (GPT's header sits at 512 or 4096).
const headSize = 8192

// concurrentWriter is a Writer that wants several WriteAt calls in flight
// (ingest.Writer writing with O_DIRECT).
type concurrentWriter interface {
	WriteConcurrency() int
}

type chunk struct {
	buf  []byte // cap streamBufSize
	n    int
	off  int64
	refs *atomic.Int32 // stages still using buf
}

// release gives buf back to the reader once the last stage is done.
func (c chunk) release(free chan<- []byte) {
	if c.refs.Add(-1) == 0 {
		free <- c.buf
	}
}

// stream copies the blob from start on into w, the writer writing and the
// hasher hashing each buffer, and returns how often a cut transfer was
// resumed. The bytes before start are w's already. When handover is set,
// it watches the stream, and where one connection is what limits the
// download it stops a little further on, at a buffer's end, and calls
// handover with that offset and the stream's rate (from another goroutine,
// at most once) for parallel ranges to fetch the rest.
func stream(ctx context.Context, t content.Fetcher, layer ocispec.Descriptor, w Writer, start int64, opts DownloadOptions, handover func(end int64, rate float64)) (int, error) {
	maxResumes := opts.MaxResumes
	if maxResumes == 0 {
		maxResumes = 5
	}
	if start >= layer.Size {
		return 0, nil // all there (an ingest that was killed before its commit)
	}
	rc, err := fetchFrom(ctx, t, layer, start)
	if err != nil {
		if errors.Is(err, ErrNotFound) {
			return 0, fmt.Errorf("layer %s: blob not found in the store: %w", layer.Digest, err)
		}
		var sm *SizeMismatchError
		if errors.As(err, &sm) {
			return 0, err // names the layer
		}
		return 0, fmt.Errorf("layer %s: %w", layer.Digest, err)
	}
	defer func() { rc.Close() }()

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	free := make(chan []byte, streamBuffers)
	for i := 0; i < streamBuffers; i++ {
		// Go allocates a buffer this large on whole pages already, so
		// copies into it are page-aligned without any help.
		free <- make([]byte, streamBufSize)
	}
	// The reader hands every chunk to the hasher and to the writer; the
	// buffer goes back to the reader when both are done with it. The hash
	// is the slowest stage, and it never waits for a write.
	toHash := make(chan chunk, streamBuffers)
	toWrite := make(chan chunk, streamBuffers)
	rd := &reader{ctx: ctx, rc: rc, layer: layer, off: start, maxResumes: maxResumes, policy: RetryPolicyOf(t), free: free, toHash: toHash, toWrite: toWrite}
	rd.stopAt.Store(layer.Size)
	readErr := make(chan error, 1)
	go func() {
		defer close(toHash)
		defer close(toWrite)
		readErr <- rd.run()
	}()
	watched := make(chan struct{})
	if handover != nil && opts.rangedOnly && !servesRanges(rc) {
		handover = nil
	}
	if handover != nil {
		go func() {
			defer close(watched)
			if end, rate := rd.watch(ctx, parallelTuning); end > 0 {
				handover(end, rate)
			}
		}()
	} else {
		close(watched)
	}

	hashed := make(chan struct{})
	go func() {
		defer close(hashed)
		for c := range toHash {
			w.HashAt(c.buf[:c.n], c.off)
			c.release(free)
		}
	}()

	// Writes that go straight to the disk each wait for it: several in
	// flight keep it busy (the Writer says how many).
	writers := 1
	if cw, ok := w.(concurrentWriter); ok {
		writers = max(1, min(cw.WriteConcurrency(), streamBuffers/2))
	}
	var (
		wmu     sync.Mutex
		werr    error
		written = start
		done    = map[int64]int64{} // written out of order: offset to end
		wg      sync.WaitGroup
	)
	for range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for c := range toWrite {
				wmu.Lock()
				failed := werr != nil
				wmu.Unlock()
				if !failed {
					_, err := w.WriteAt(c.buf[:c.n], c.off)
					wmu.Lock()
					if err != nil && werr == nil {
						werr = err
						cancel() // stop the reader; drain what it sent
					} else if err == nil && opts.Progress != nil {
						// How far the stream is: up to where every byte is
						// written (the writes may finish out of order).
						// Once per chunk, as before, as each joins the
						// prefix.
						done[c.off] = c.off + int64(c.n)
						for end, ok := done[written]; ok; end, ok = done[written] {
							delete(done, written)
							written = end
							opts.Progress(written, layer.Size)
						}
					}
					wmu.Unlock()
				}
				c.release(free)
			}
		}()
	}
	wg.Wait()
	<-hashed
	rerr := <-readErr
	cancel()
	<-watched
	if werr != nil {
		return rd.resumes, &writeError{name: w.Name(), err: werr}
	}
	return rd.resumes, rerr
}

// reader fills buffers from rc in order from off on, each full
// (streamBufSize) except the last, and hands each to both stages. It
// resumes at the current offset with Seek (an HTTP Range request) after a
// cut, at most maxResumes times, each after the policy's back-off (the
// first one almost at once). It checks that the blob is exactly
// layer.Size bytes long, unless it is told to stop earlier (stopAt).
type reader struct {
	ctx             context.Context
	rc              io.ReadCloser
	layer           ocispec.Descriptor
	off             int64
	maxResumes      int
	policy          *RetryPolicy // the wait before each resume
	resumes         int
	free            <-chan []byte
	toHash, toWrite chan<- chunk

	stopAt  atomic.Int64 // where to stop; lowered by watch
	pos     atomic.Int64 // where the buffer being filled starts
	waiting atomic.Int64 // nanoseconds spent waiting for a free buffer
}

func (rd *reader) resume(cause error) error {
	sk, ok := rd.rc.(io.Seeker)
	layer := rd.layer
	for {
		if !ok || rd.resumes >= rd.maxResumes || rd.maxResumes < 0 {
			if errors.Is(cause, io.EOF) || errors.Is(cause, io.ErrUnexpectedEOF) {
				return fmt.Errorf("layer %s: the transfer was cut at %d of %d bytes, still short after %d resumes", layer.Digest, rd.off, layer.Size, rd.resumes)
			}
			return fmt.Errorf("layer %s: the transfer failed at %d of %d bytes after %d resumes: %w", layer.Digest, rd.off, layer.Size, rd.resumes, cause)
		}
		if err := rd.policy.Wait(rd.ctx, rd.policy.Backoff(rd.resumes)); err != nil {
			return err
		}
		rd.resumes++
		// Seeking to where the reader already is does nothing, so go
		// to the end first (which drops the dead connection) and back:
		// the second seek sends "Range: bytes=off-".
		_, _ = sk.Seek(layer.Size, io.SeekStart)
		_, err := sk.Seek(rd.off, io.SeekStart)
		if err == nil {
			return nil
		}
		if rd.ctx.Err() != nil {
			return rd.ctx.Err()
		}
		cause = err
	}
}

func (rd *reader) run() error {
	ctx, layer := rd.ctx, rd.layer
	rd.pos.Store(rd.off)
	for rd.off < rd.stopAt.Load() {
		var buf []byte
		select {
		case buf = <-rd.free:
		default:
			t0 := time.Now()
			select {
			case buf = <-rd.free:
			case <-ctx.Done():
				return ctx.Err()
			}
			rd.waiting.Add(int64(time.Since(t0)))
		}
		want := int(min(int64(streamBufSize), rd.stopAt.Load()-rd.off))
		n := 0
		for n < want {
			m, err := rd.rc.Read(buf[n:want])
			n += m
			rd.off += int64(m)
			if err == nil || (err == io.EOF && n == want) {
				continue
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if err := rd.resume(err); err != nil {
				return err
			}
		}
		c := chunk{buf: buf, n: n, off: rd.off - int64(n), refs: new(atomic.Int32)}
		c.refs.Store(2)
		rd.pos.Store(rd.off)
		// Both stages always take the chunk (their channels hold every
		// buffer), so a buffer is never lost on cancellation.
		rd.toHash <- c
		rd.toWrite <- c
	}
	if rd.off < layer.Size {
		return nil // handed over: the rest comes in parallel ranges
	}
	// The blob must end here: one more byte is a size mismatch.
	var one [1]byte
	for {
		m, err := rd.rc.Read(one[:])
		if m > 0 {
			return sizeMismatch(layer)
		}
		if err != nil || ctx.Err() != nil {
			return nil // EOF, or a cut after the last byte: we have it all
		}
	}
}

func sizeMismatch(layer ocispec.Descriptor) error {
	return &SizeMismatchError{Digest: layer.Digest, Size: layer.Size}
}

// writeError is a failed write of the local copy: not the source's fault,
// so no other source is asked.
type writeError struct {
	name string
	err  error
}

func (e *writeError) Error() string { return fmt.Sprintf("write %s: %v", e.name, e.err) }
func (e *writeError) Unwrap() error { return e.err }
