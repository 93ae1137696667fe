package oci

import (
	"context"
	"errors"
	"fmt"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/content"

	"github.com/sysext/sysext/ingest"
)

// A full download of a large image starts as one stream (the fastest way
// when one connection keeps up: one request, bytes hashed in order from
// memory) and watches it. When the stream is what limits the download —
// the reader never waits for the disk or the hash, and at its rate several
// seconds are left — the rest is fetched as parallel Range requests, the
// way object stores and CDNs that cap each connection are served fastest
// (Tart cut a 40 GB pull from 23 to 4 minutes so). The number of
// connections ramps up, 2, 4, 8, while each step adds at least a quarter;
// when two connections bring nothing over one (a shared bottleneck), it
// goes back to one request for the rest.
//
// Hashing stays one pass per byte: a part that arrives in order is hashed
// from memory; one that arrives ahead is hashed from the file (the page
// cache) as soon as the bytes before it are hashed, while the others still
// arrive, so at the end only the last parts are left to hash.

// tuning are the handover and ramp rules; tests change them.
type tuning struct {
	minRest  int64         // hand over only when at least this much is left
	settle   time.Duration // and the stream has run this long
	window   time.Duration // measured over this
	minLeft  time.Duration // and at its rate at least this long is left
	maxWait  float64       // and the reader waited for a buffer at most this share of the time
	ramp     time.Duration // each ramp step is measured over this
	gain     float64       // a step up must add this share
	force    bool          // hand over at the first look (tests)
	minLevel int           // the ramp's first level (tests: the full concurrency)
}

var parallelTuning = tuning{
	minRest: 64 << 20,
	settle:  time.Second,
	window:  500 * time.Millisecond,
	minLeft: 2 * time.Second,
	maxWait: 0.1,
	ramp:    time.Second,
	gain:    1.25,
}

// defaultConcurrency bounds the parallel ranges of a full download: eight
// connections of 50 Mbit/s fill 400.
const defaultConcurrency = 8

// rangeWriter is a Writer that knows which bytes it holds and hashes what
// was written out of order (ingest.Writer, store.Ingest): what the parallel
// and resumed-by-ranges paths need.
type rangeWriter interface {
	Writer
	Missing() []ingest.Range
	Hashed() int64
	HashTo(ctx context.Context, end int64) error
}

// watch decides whether the stream hands over to parallel ranges: at each
// window after the settling time it looks at the stream's rate and how
// long the reader waited for buffers (the disk or the hash being the
// slower side). When it hands over it lowers stopAt and returns it with
// the rate; it returns 0, 0 when the stream ends first.
func (rd *reader) watch(ctx context.Context, tun tuning) (int64, float64) {
	start := time.Now()
	tick := time.NewTicker(tun.window)
	defer tick.Stop()
	prevT, prevPos, prevWait := start, rd.pos.Load(), rd.waiting.Load()
	for {
		select {
		case <-ctx.Done():
			return 0, 0
		case now := <-tick.C:
			pos, wait := rd.pos.Load(), rd.waiting.Load()
			dt := now.Sub(prevT).Seconds()
			rate := float64(pos-prevPos) / dt
			waited := float64(wait-prevWait) / 1e9 / dt
			prevT, prevPos, prevWait = now, pos, wait
			left := rd.layer.Size - pos
			if left < tun.minRest {
				return 0, 0 // too little left to gain anything
			}
			if !tun.force && (now.Sub(start) < tun.settle || waited > tun.maxWait || rate <= 0 || float64(left)/rate < tun.minLeft.Seconds()) {
				continue
			}
			// The buffer being filled starts at pos and ends at most one
			// buffer later: stop after the next one.
			end := pos + 2*streamBufSize
			rd.stopAt.Store(end)
			return end, max(rate, 1)
		}
	}
}

// fetchRest fetches ranges of layer (all of the blob that w lacks after
// from on, or what a stopped parallel download left missing) with parallel
// Range requests, hashing in order as the prefix grows. rate is the single
// stream's rate the ramp starts from (0: use every connection at once).
// A store that does not serve ranges gets one stream for what is missing.
// Hashing waits for hashFrom to close: until then the bytes before the
// ranges belong to the stream that handed over, which is still finishing.
func fetchRest(ctx context.Context, t content.Fetcher, layer ocispec.Descriptor, w rangeWriter, ranges []Range, rate float64, opts DownloadOptions, hashFrom <-chan struct{}) (int, error) {
	src, err := openRangeSource(t, layer)
	if err == nil {
		err = fetchParallel(ctx, src, layer, w, ranges, rate, opts, hashFrom)
		src.Close()
	}
	if !errors.Is(err, ErrRangeUnsupported) {
		return 0, err
	}
	<-hashFrom
	// One stream from where the written bytes stop: hash what is written
	// before it, then on as a plain download.
	if err := w.HashTo(ctx, w.Offset()); err != nil {
		return 0, fmt.Errorf("layer %s: %w", layer.Digest, err)
	}
	return stream(ctx, t, layer, w, w.Offset(), opts, nil)
}

func fetchParallel(ctx context.Context, src rangeSource, layer ocispec.Descriptor, w rangeWriter, ranges []Range, rate float64, opts DownloadOptions, hashFrom <-chan struct{}) error {
	return runParallel(ctx, layer, w, rate, opts, hashFrom, func(ctx context.Context, ro RangeOptions, setup engineSetup) error {
		e := newRangeEngine(src, layer, w, ro)
		e.queue = append(e.queue, ranges...)
		after := setup(e)
		_, err := e.run(ctx)
		after()
		return err
	})
}

// engineSetup readies an engine of a full download's parallel ranges (the
// shared buffers and hasher, the part size, the ramp) and returns what to
// call once it has run.
type engineSetup func(e *rangeEngine) (after func())

// runParallel runs the parallel ranges of a full download: run fetches
// them with engines readied by setup (one; through mirrors, one per
// source in turn), all writing into w and handing their buffers to one
// hasher, which hashes in order as the prefix grows, from when hashFrom
// closes.
func runParallel(ctx context.Context, layer ocispec.Descriptor, w rangeWriter, rate float64, opts DownloadOptions, hashFrom <-chan struct{}, run func(context.Context, RangeOptions, engineSetup) error) error {
	conc := opts.Concurrency
	if conc <= 0 {
		conc = defaultConcurrency
	}
	retries := opts.MaxResumes
	if retries == 0 {
		retries = 5
	}
	ro := RangeOptions{Concurrency: conc, MaxRetries: retries, Progress: opts.progress}
	// Buffers: one being filled per connection, and as many on their way
	// to the hasher.
	free := make(chan []byte, 2*conc)
	for i := 0; i < 2*conc; i++ {
		free <- make([]byte, rangeBufSize)
	}
	chunks := make(chan chunk, 2*conc)
	tun := parallelTuning
	// Bytes held already (a resumed download) are hashed from the file
	// when the hash reaches them.
	var cold ingest.Ranges
	for _, m := range complement(w.Missing(), layer.Size) {
		cold.Add(m.Off, m.End)
	}
	hashErr := make(chan error, 1)
	go func() {
		<-hashFrom
		hashErr <- hashInOrder(ctx, w, cold, chunks, free)
	}()
	err := run(ctx, ro, func(e *rangeEngine) func() {
		e.free = free
		e.onChunk = func(buf []byte, n int, off int64) { chunks <- chunk{buf: buf, n: n, off: off} }
		if rate > 0 {
			e.part = min(max(int64(rate*1.5)&^(minPartSize-1), 2*minPartSize), maxPartSize)
			e.limit = max(2, tun.minLevel)
		} else {
			e.limit = conc
		}
		rampCtx, stopRamp := context.WithCancel(ctx)
		if rate > 0 {
			go e.ramp(rampCtx, rate, tun)
		}
		return stopRamp
	})
	close(chunks)
	if herr := <-hashErr; err == nil && herr != nil {
		err = fmt.Errorf("layer %s: %w", layer.Digest, herr)
	}
	return err
}

// ramp raises the number of connections while each step pays, from the
// single stream's rate on.
func (e *rangeEngine) ramp(ctx context.Context, single float64, tun tuning) {
	prev := single
	for {
		e.mu.Lock()
		level := e.limit
		if e.probe && e.opened > 0 {
			level = e.opened // the probe's one request is not a level
		}
		e.mu.Unlock()
		// Let the new connections get going (a request's round trip, the
		// stream handing over), then measure.
		select {
		case <-ctx.Done():
			return
		case <-time.After(tun.ramp / 2):
		}
		before, t0 := e.received.Load(), time.Now()
		select {
		case <-ctx.Done():
			return
		case <-time.After(tun.ramp):
		}
		rate := float64(e.received.Load()-before) / time.Since(t0).Seconds()
		switch {
		case rate >= tun.gain*prev && level < e.conc:
			prev = rate
			e.setLimit(2 * level)
		case level == 2 && rate < 1.1*single && tun.minLevel <= 1:
			// One connection was as fast: a shared bottleneck. One
			// request for the rest, as a single stream would.
			e.setLimit(1)
			return
		default:
			return
		}
	}
}

// hashInOrder hashes the chunks that continue the hashed prefix from
// memory and, as the prefix reaches bytes written ahead of it (chunks that
// arrived out of order, bytes held before), hashes those from the file.
// Every buffer goes back to free. It returns the first hashing error.
func hashInOrder(ctx context.Context, w rangeWriter, cold ingest.Ranges, chunks <-chan chunk, free chan<- []byte) error {
	var err error
	catchUp := func() {
		for err == nil {
			h := w.Hashed()
			for len(cold) > 0 && cold[0].End <= h {
				cold = cold[1:]
			}
			if len(cold) == 0 || cold[0].Off > h {
				return
			}
			err = w.HashTo(ctx, cold[0].End)
		}
	}
	catchUp()
	for c := range chunks {
		if err == nil {
			if h := w.Hashed(); c.off == h {
				w.HashAt(c.buf[:c.n], c.off)
			} else if c.off > h {
				cold.Add(c.off, c.off+int64(c.n))
			}
		}
		free <- c.buf
		catchUp()
	}
	return err
}

// complement is what [0, size) holds outside miss (sorted, disjoint).
func complement(miss []ingest.Range, size int64) []ingest.Range {
	var out []ingest.Range
	at := int64(0)
	for _, m := range miss {
		if m.Off > at {
			out = append(out, ingest.Range{Off: at, End: m.Off})
		}
		at = m.End
	}
	if at < size {
		out = append(out, ingest.Range{Off: at, End: size})
	}
	return out
}
