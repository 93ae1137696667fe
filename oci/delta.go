package oci

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"sort"
	"sync"

	"github.com/opencontainers/go-digest"

	"github.com/sysext/sysext/delta"
	"github.com/sysext/sysext/ingest"
)

// DeltaSource is an image the node holds, as a source of chunks for a
// delta download: its bytes and its chunk index (made with the same
// chunker as the new image's).
type DeltaSource struct {
	Name  string // for messages
	File  io.ReaderAt
	Index *delta.Index
}

// DeltaOptions say what DownloadDelta assembles the image from.
type DeltaOptions struct {
	// Into receives the image (the store's ingest); required.
	Into Writer
	// Index is the new image's chunk index, found and checked by
	// FindChunkIndex.
	Index *delta.Index
	// Sources are the images the node holds, the most likely first: a
	// chunk is taken from the first that has it.
	Sources []DeltaSource
	// Concurrency bounds the range requests in flight (default 4).
	Concurrency int
	// Plan tunes how missing chunks become requests (delta.PlanOptions).
	Plan delta.PlanOptions
	// Progress, when set, is told the bytes fetched of those to fetch.
	Progress ProgressFunc
	// Planned, when set, is told the plan before anything is written or
	// fetched; an error stops the download there (and is returned).
	Planned func(p *delta.Plan) error
}

// ErrChunkMismatch says a chunk's bytes did not match its digest in the
// chunk index: fetched ones (a registry or cache serving wrong bytes, or an
// index that does not describe the image), or a local image's.
var ErrChunkMismatch = errors.New("a chunk does not match its digest in the chunk index")

// LocalChunkError says a chunk read from a held image did not match the
// digest its chunk index gives: the image or its index is damaged.
type LocalChunkError struct {
	Source int // the index in DeltaOptions.Sources
	Name   string
	Off    int64
}

func (e *LocalChunkError) Error() string {
	return fmt.Sprintf("%s: the chunk at %d does not match its chunk index: the stored image or its index is damaged", e.Name, e.Off)
}

func (e *LocalChunkError) Unwrap() error { return ErrChunkMismatch }

// deltaBatch is how many bytes the assembler writes or hashes at a time.
const deltaBatch = 1 << 20

// DownloadDelta assembles e's layer in o.Into from the chunks it finds in
// o.Sources and the ranges of the layer it fetches from t (delta.MakePlan:
// missing chunks merged across small gaps, split above 8 MiB, at most
// o.Concurrency single-range requests at a time), then checks it as
// Download does: the whole file's digest, the content's magic and
// metadata. Every chunk is checked against its digest before it is
// written, local or fetched; chunks a resumed Into holds already are kept.
// The chunks are written and hashed in order where they can be, so the
// whole file's digest costs one pass of hashing (each chunk is hashed
// twice: alone and in the whole); fetched chunks are read back from the
// file for it.
//
// Any failure (a registry that ignores Range: ErrRangeUnsupported; a chunk
// that does not match: ErrChunkMismatch; a cut beyond the retries; a
// wrong digest at the end) is returned; what Into holds is then to be
// discarded by the caller, who downloads the whole image instead.
func DownloadDelta(ctx context.Context, t Target, e *Entry, o DeltaOptions) (*Downloaded, error) {
	layer := e.Layer
	if err := layer.Digest.Validate(); err != nil || layer.Digest.Algorithm() != digest.SHA256 {
		return nil, fmt.Errorf("layer digest %q: only valid sha256 digests are supported", layer.Digest)
	}
	if o.Into == nil || o.Index == nil {
		return nil, errors.New("delta download: no writer or no chunk index")
	}
	ix := o.Index
	if err := ix.Check(layer.Size, layer.Digest.String()); err != nil {
		return nil, fmt.Errorf("layer %s: %w", layer.Digest, err)
	}
	a := &assembler{t: t, e: e, o: o, ix: ix, w: o.Into}
	a.plan = delta.MakePlan(ix, a.lookup(), a.have(), o.Plan)
	if o.Planned != nil {
		if err := o.Planned(a.plan); err != nil {
			return nil, err
		}
	}
	if err := a.run(ctx); err != nil {
		return nil, err
	}
	var wrong func(digest.Digest) error
	if mt, ok := t.(*mirrorTarget); ok && len(a.used) > 0 {
		// Chunks that matched an index that does not describe the image:
		// the mirrors that sent them are not asked for it again.
		wrong = func(got digest.Digest) error { return mt.blame(layer, got, a.used) }
	}
	res, err := checkWritten(ctx, e, o.Into, wrong)
	if err != nil {
		return nil, err
	}
	res.Reused, res.Fetched = a.plan.Reused+a.plan.Held, a.plan.Fetched+a.skipped
	return res, nil
}

// assembler writes one image from its plan.
type assembler struct {
	t     Target
	e     *Entry
	o     DeltaOptions
	ix    *delta.Index
	w     Writer
	plan  *delta.Plan
	wmu   sync.Mutex // Into's WriteAt takes one call at a time
	sink  *chunkSink
	local *localProgress
	data  *os.File // Into's file, read back for the digest and for copies
	// skipped: bytes of a mirror's whole answer read past; used: the
	// mirrors and origin that sent ranges (fetchRanges).
	skipped int64
	used    []*source
}

// lookup finds a chunk in the sources whose chunker is the new image's;
// only the new image's digests are kept.
func (a *assembler) lookup() delta.Local {
	want := make(map[[sha256.Size]byte]struct{}, len(a.ix.Chunks))
	for _, c := range a.ix.Chunks {
		want[c.Sum] = struct{}{}
	}
	type loc struct {
		src int
		off int64
	}
	found := map[[sha256.Size]byte]loc{}
	for i, s := range a.o.Sources {
		if s.Index == nil || !s.Index.Same(a.ix.Chunker) {
			continue
		}
		for _, c := range s.Index.Chunks {
			if _, ok := want[c.Sum]; !ok {
				continue
			}
			if _, ok := found[c.Sum]; !ok {
				found[c.Sum] = loc{i, c.Off}
			}
		}
	}
	return func(sum [sha256.Size]byte) (int, int64, bool) {
		l, ok := found[sum]
		return l.src, l.off, ok
	}
}

// have reports the bytes a resumed Into holds already.
func (a *assembler) have() func(off, n int64) bool {
	m, ok := a.w.(interface{ Missing() []ingest.Range })
	if !ok {
		return nil
	}
	missing := m.Missing()
	return func(off, n int64) bool {
		// The first missing range that ends after off must start at or
		// after off+n.
		i := sort.Search(len(missing), func(i int) bool { return missing[i].End > off })
		return i == len(missing) || missing[i].Off >= off+n
	}
}

// run fetches the plan's ranges and writes the chunks found in the stored
// images (copyLocal), both in the background, while it walks the chunks in
// order and hands every byte to the whole file's hash. The local chunks
// do not wait for the fetched ones before them: by the time the last
// range arrives they are written, and the walk only has the hashing left.
func (a *assembler) run(ctx context.Context) error {
	data, err := os.Open(a.w.Name())
	if err != nil {
		return err
	}
	defer data.Close()
	a.data = data
	a.sink = newChunkSink(a.ix, a.plan, a.write)
	a.local = newLocalProgress()
	ranges := make([]Range, len(a.plan.Ranges))
	for i, r := range a.plan.Ranges {
		ranges[i] = Range{Off: r.Off, Len: r.Len}
	}
	fctx, cancel := context.WithCancel(ctx)
	defer cancel()
	fetched := make(chan error, 1)
	go func() {
		var done int64
		ro := RangeOptions{Concurrency: a.o.Concurrency, InOrder: true}
		if a.o.Progress != nil {
			ro.Progress = func(n int64) {
				done += n
				a.o.Progress(done, a.plan.Fetched)
			}
		}
		var err error
		if len(ranges) > 0 {
			_, a.skipped, a.used, err = fetchRanges(fctx, a.t, a.e.Layer, ranges, a.sink, ro)
		}
		a.sink.finish(err)
		fetched <- err
	}()
	copied := make(chan error, 1)
	go func() {
		err := a.copyLocal(fctx)
		a.local.finish(len(a.ix.Chunks), err)
		copied <- err
	}()
	werr := a.walk(ctx)
	if werr != nil {
		cancel()
	}
	cerr := <-copied
	ferr := <-fetched
	if werr != nil {
		return werr
	}
	if cerr != nil {
		return cerr
	}
	if ferr != nil {
		return fmt.Errorf("layer %s: %w", a.e.Layer.Digest, ferr)
	}
	return nil
}

// write is Into's WriteAt, one call at a time.
func (a *assembler) write(p []byte, off int64) error {
	a.wmu.Lock()
	defer a.wmu.Unlock()
	_, err := a.w.WriteAt(p, off)
	return err
}

// copyLocal writes the chunks taken from the stored images, in order:
// runs of them are read into a buffer, each checked against its digest,
// and written; a.local says how far it got.
func (a *assembler) copyLocal(ctx context.Context) error {
	buf := make([]byte, 0, deltaBatch+a.ix.Chunker.Max)
	var bufOff int64 // where buf's bytes go
	h := sha256.New()
	flush := func(next int) error {
		if len(buf) > 0 {
			if err := a.write(buf, bufOff); err != nil {
				return fmt.Errorf("write %s: %w", a.w.Name(), err)
			}
			buf = buf[:0]
		}
		a.local.advance(next)
		return nil
	}
	for i, c := range a.ix.Chunks {
		st := a.plan.Steps[i]
		if st.Action != delta.Take {
			continue
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if len(buf) > 0 && (bufOff+int64(len(buf)) != c.Off || len(buf) >= deltaBatch) {
			if err := flush(i); err != nil {
				return err
			}
		}
		if len(buf) == 0 {
			bufOff = c.Off
		}
		p := buf[len(buf) : len(buf)+int(c.Len)]
		src := a.o.Sources[st.Src]
		if _, err := src.File.ReadAt(p, st.SrcOff); err != nil {
			return fmt.Errorf("read %s at %d: %w", src.Name, st.SrcOff, err)
		}
		if chunkSum(h, p) != c.Sum {
			return &LocalChunkError{Source: st.Src, Name: src.Name, Off: st.SrcOff}
		}
		buf = buf[:len(buf)+int(c.Len)]
	}
	return flush(len(a.ix.Chunks))
}

// walk goes through the chunks in order and hands them to the whole
// file's hash, read back from the file in batches once they are written:
// fetched ones as they arrive (the sink), local ones as copyLocal writes
// them. Copies of earlier chunks of the image are read from it, checked
// and written here, once what they copy is written.
func (a *assembler) walk(ctx context.Context) error {
	hashed := a.w.Offset() // the bytes before it are hashed (a resumed ingest)
	buf := make([]byte, deltaBatch+a.ix.Chunker.Max)
	h := sha256.New()
	// hash hands the bytes p at off to the whole file's hash, from where
	// it stands.
	hash := func(p []byte, off int64) {
		if off <= hashed && hashed < off+int64(len(p)) {
			a.w.HashAt(p[hashed-off:], hashed)
			hashed = off + int64(len(p))
		}
	}
	// readBack hashes chunks first to last of the new file, once they are
	// written.
	readBack := func(first, last int) error {
		if err := a.sink.wait(ctx, first, last); err != nil {
			return err
		}
		if err := a.local.wait(ctx, last+1); err != nil {
			return err
		}
		off := a.ix.Chunks[first].Off
		end := a.ix.Chunks[last].Off + a.ix.Chunks[last].Len
		off = max(off, hashed)
		for off < end {
			n := min(int64(deltaBatch), end-off)
			p := buf[:n]
			if _, err := a.data.ReadAt(p, off); err != nil {
				return fmt.Errorf("read back %s: %w", a.w.Name(), err)
			}
			hash(p, off)
			off += n
		}
		return nil
	}
	span := -1 // the first chunk of a run not hashed yet
	for i, c := range a.ix.Chunks {
		if err := ctx.Err(); err != nil {
			return err
		}
		st := a.plan.Steps[i]
		if st.Action != delta.Copy {
			if span < 0 {
				span = i
			}
			if c.Off+c.Len-a.ix.Chunks[span].Off >= deltaBatch {
				if err := readBack(span, i); err != nil {
					return err
				}
				span = -1
			}
			continue
		}
		// What it copies, earlier in the file, is written once the run
		// before it is.
		if span >= 0 {
			if err := readBack(span, i-1); err != nil {
				return err
			}
			span = -1
		}
		p := buf[:c.Len]
		if _, err := a.data.ReadAt(p, st.SrcOff); err != nil {
			return fmt.Errorf("read %s at %d: %w", a.w.Name(), st.SrcOff, err)
		}
		if chunkSum(h, p) != c.Sum {
			return fmt.Errorf("%s: the chunk at %d (a copy of the one at %d): %w", a.w.Name(), c.Off, st.SrcOff, ErrChunkMismatch)
		}
		if err := a.write(p, c.Off); err != nil {
			return fmt.Errorf("write %s: %w", a.w.Name(), err)
		}
		hash(p, c.Off)
	}
	if span >= 0 {
		return readBack(span, len(a.ix.Chunks)-1)
	}
	return nil
}

// localProgress says how far copyLocal got: every local chunk before done
// is written; err is why it stopped.
type localProgress struct {
	mu   sync.Mutex
	cond *sync.Cond
	done int
	end  bool
	err  error
}

func newLocalProgress() *localProgress {
	l := &localProgress{}
	l.cond = sync.NewCond(&l.mu)
	return l
}

func (l *localProgress) advance(done int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.done = max(l.done, done)
	l.cond.Broadcast()
}

func (l *localProgress) finish(n int, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err == nil {
		l.done = max(l.done, n)
	}
	l.end, l.err = true, err
	l.cond.Broadcast()
}

// wait returns once every local chunk before n is written, or with the
// error that stopped copyLocal.
func (l *localProgress) wait(ctx context.Context, n int) error {
	stop := context.AfterFunc(ctx, func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		l.cond.Broadcast()
	})
	defer stop()
	l.mu.Lock()
	defer l.mu.Unlock()
	for l.done < n && !l.end && ctx.Err() == nil {
		l.cond.Wait()
	}
	switch {
	case l.done >= n:
		return nil
	case l.err != nil:
		return l.err
	case ctx.Err() != nil:
		return ctx.Err()
	}
	return fmt.Errorf("the chunk before %d was not copied", n)
}

func chunkSum(h hash.Hash, p []byte) (s [sha256.Size]byte) {
	h.Reset()
	h.Write(p)
	h.Sum(s[:0])
	return s
}

// chunkSink is the io.WriterAt the ranges are fetched into: it collects
// each chunk's bytes, checks the chunk against its digest, and only then
// writes it into the image; the walk waits on it for chunks to arrive.
// The plan's ranges hold whole chunks and never share one, so a chunk is
// only ever written by one request.
type chunkSink struct {
	ix    *delta.Index
	steps []delta.Step
	write func(p []byte, off int64) error
	pool  sync.Pool

	mu      sync.Mutex
	cond    *sync.Cond
	arrived []bool
	partial map[int]*partialChunk
	done    bool
	err     error
}

type partialChunk struct {
	buf  []byte
	fill int64
}

func newChunkSink(ix *delta.Index, plan *delta.Plan, write func([]byte, int64) error) *chunkSink {
	s := &chunkSink{ix: ix, steps: plan.Steps, write: write, arrived: make([]bool, len(ix.Chunks)), partial: map[int]*partialChunk{}}
	s.cond = sync.NewCond(&s.mu)
	s.pool.New = func() any { return make([]byte, ix.Chunker.Max) }
	return s
}

// WriteAt takes the bytes p of the image at off, from one range request.
func (s *chunkSink) WriteAt(p []byte, off int64) (int, error) {
	n := 0
	for len(p) > 0 {
		i := sort.Search(len(s.ix.Chunks), func(i int) bool { return s.ix.Chunks[i].Off+s.ix.Chunks[i].Len > off })
		if i == len(s.ix.Chunks) {
			return n, fmt.Errorf("bytes at %d are past the image's end", off)
		}
		c := s.ix.Chunks[i]
		k := min(int64(len(p)), c.Off+c.Len-off)
		s.mu.Lock()
		if s.arrived[i] { // sent again after a retry: checked already
			s.mu.Unlock()
			p, off, n = p[k:], off+k, n+int(k)
			continue
		}
		pc := s.partial[i]
		if pc == nil {
			pc = &partialChunk{buf: s.pool.Get().([]byte)}
			s.partial[i] = pc
		}
		s.mu.Unlock()
		rel := off - c.Off
		if rel > pc.fill {
			return n, fmt.Errorf("the chunk at %d: bytes from %d arrived before those from %d", c.Off, off, c.Off+pc.fill)
		}
		copy(pc.buf[rel:rel+k], p[:k])
		pc.fill = max(pc.fill, rel+k)
		if pc.fill == c.Len {
			if sha256.Sum256(pc.buf[:c.Len]) != c.Sum {
				return n, fmt.Errorf("the chunk of %d bytes at %d: %w", c.Len, c.Off, ErrChunkMismatch)
			}
			if err := s.write(pc.buf[:c.Len], c.Off); err != nil {
				return n, err
			}
			s.mu.Lock()
			s.arrived[i] = true
			delete(s.partial, i)
			s.cond.Broadcast()
			s.mu.Unlock()
			s.pool.Put(pc.buf)
		}
		p, off, n = p[k:], off+k, n+int(k)
	}
	return n, nil
}

// finish says the fetching is over (err: why it stopped).
func (s *chunkSink) finish(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.done, s.err = true, err
	s.cond.Broadcast()
}

// wait returns once every fetched chunk from first to last is written, or
// with the error that stopped the fetching.
func (s *chunkSink) wait(ctx context.Context, first, last int) error {
	stop := context.AfterFunc(ctx, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.cond.Broadcast()
	})
	defer stop()
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := first; i <= last; i++ {
		for !s.arrived[i] && !s.done && ctx.Err() == nil && s.fetched(i) {
			s.cond.Wait()
		}
		if s.arrived[i] || !s.fetched(i) {
			continue
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if s.err != nil {
			return s.err
		}
		return fmt.Errorf("the chunk at %d was not fetched", s.ix.Chunks[i].Off)
	}
	return nil
}

// fetched reports whether chunk i comes with a range.
func (s *chunkSink) fetched(i int) bool { return s.steps[i].Action == delta.Fetch }
