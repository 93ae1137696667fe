package delta

import "crypto/sha256"

// Range is a byte range of the new image to fetch: Len bytes from Off.
type Range struct{ Off, Len int64 }

// Action says where one chunk of the new image comes from.
type Action uint8

const (
	// Take reads the chunk from a local image (Step.Src at Step.SrcOff),
	// checks it against its digest and writes it.
	Take Action = iota
	// Fetch: the chunk arrives with one of Plan.Ranges.
	Fetch
	// Have: the new file holds the chunk already (a resumed download).
	Have
	// Copy reads the chunk from the new file itself, at SrcOff, where an
	// earlier chunk with the same digest is fetched or held: a chunk that
	// repeats in the image is fetched once.
	Copy
)

func (a Action) String() string {
	return [...]string{"take", "fetch", "have", "copy"}[a]
}

// Step is what happens to one chunk of the new image.
type Step struct {
	Action Action
	// Src is the local image (the caller's number for it) and SrcOff the
	// offset there, for Take; SrcOff is the offset in the new file for
	// Copy.
	Src    int
	SrcOff int64
}

// Plan is how a node assembles a new image: a step per chunk, in order,
// and the ranges to fetch.
type Plan struct {
	Steps  []Step
	Ranges []Range
	// Bytes of the image by where they come from: Reused from local images
	// (Take) and from the new image itself (Copy), Fetched in Ranges
	// (gaps between missing chunks included), Held already.
	Reused, Fetched, Held int64
}

// Local finds a chunk with digest sum in an image the node holds.
type Local func(sum [sha256.Size]byte) (src int, off int64, ok bool)

// PlanOptions tune MakePlan. The zero value is the default.
type PlanOptions struct {
	// Gap: missing chunks whose gap is at most this many bytes are fetched
	// in one range, the bytes between included (default 64 KiB; negative:
	// only adjacent chunks). A request costs a round trip; 64 KiB costs
	// 5 ms at 100 Mbit/s.
	Gap int64
	// MaxRange splits longer ranges at chunk boundaries, so that parallel
	// requests share the work (default 8 MiB).
	MaxRange int64
}

// Defaults of PlanOptions.
const (
	DefaultGap      = 64 << 10
	DefaultMaxRange = 8 << 20
)

// MakePlan decides for each chunk of ix where it comes from: held already
// (have reports the bytes [off, off+n) written in the new file), found
// locally, a repeat of an earlier chunk of the new image, or fetched. The
// fetched chunks are merged into ranges (gaps up to o.Gap fetched with
// them) and the ranges split above o.MaxRange.
func MakePlan(ix *Index, local Local, have func(off, n int64) bool, o PlanOptions) *Plan {
	gap, maxRange := o.Gap, o.MaxRange
	if gap == 0 {
		gap = DefaultGap
	}
	if maxRange <= 0 {
		maxRange = DefaultMaxRange
	}
	maxRange = max(maxRange, int64(ix.Chunker.Max))
	p := &Plan{Steps: make([]Step, len(ix.Chunks))}
	// first is where a digest is first found in the new file (held or
	// fetched), for repeats.
	first := map[[sha256.Size]byte]int64{}
	for i, c := range ix.Chunks {
		switch {
		case have != nil && have(c.Off, c.Len):
			p.Steps[i] = Step{Action: Have}
			if _, ok := first[c.Sum]; !ok {
				first[c.Sum] = c.Off
			}
		default:
			src, off, ok := 0, int64(0), false
			if local != nil {
				src, off, ok = local(c.Sum)
			}
			if ok {
				p.Steps[i] = Step{Action: Take, Src: src, SrcOff: off}
			} else if at, ok := first[c.Sum]; ok {
				p.Steps[i] = Step{Action: Copy, SrcOff: at}
			} else {
				p.Steps[i] = Step{Action: Fetch}
				first[c.Sum] = c.Off
			}
		}
	}
	// Merge: a chunk between two fetched ones whose gap is small comes
	// with the range too.
	last := -1 // the last fetched chunk
	for i := range ix.Chunks {
		if p.Steps[i].Action != Fetch {
			continue
		}
		if last >= 0 && last < i-1 && ix.Chunks[i].Off-(ix.Chunks[last].Off+ix.Chunks[last].Len) <= gap {
			for j := last + 1; j < i; j++ {
				p.Steps[j] = Step{Action: Fetch}
			}
		}
		last = i
	}
	// A Copy whose source became part of a range still reads the new
	// file: the source is written before the copy is made (in order).
	var cur *Range
	for i, c := range ix.Chunks {
		if p.Steps[i].Action != Fetch {
			cur = nil
			continue
		}
		if cur == nil || cur.Len+c.Len > maxRange {
			p.Ranges = append(p.Ranges, Range{Off: c.Off})
			cur = &p.Ranges[len(p.Ranges)-1]
		}
		cur.Len += c.Len
	}
	for i, c := range ix.Chunks {
		switch p.Steps[i].Action {
		case Take, Copy:
			p.Reused += c.Len
		case Fetch:
			p.Fetched += c.Len
		case Have:
			p.Held += c.Len
		}
	}
	return p
}
