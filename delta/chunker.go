package delta

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/bits"
)

// The chunker of format version 1: FastCDC with 16 KiB minimum, 64 KiB
// average and 256 KiB maximum chunks. 64 KiB because the bytes a node
// misses hardly depend on the chunk size (4-64 KiB: within 2% on the
// research workload, docs/delta-research.md) while the index shrinks with
// it (36 bytes a chunk: 12 KiB for a 26 MiB image).
const (
	MinSize = 16 << 10
	AvgSize = 64 << 10
	MaxSize = 256 << 10
)

// Chunker is a FastCDC content-defined chunker (Xia et al., 2016): a gear
// rolling hash, no cut below Min, a stricter mask before Avg and a looser
// one after it (normalized chunking, level 2), a forced cut at Max. The
// gear table and the masks are part of the format: a node and a publisher
// cut the same bytes at the same places.
type Chunker struct {
	Min, Avg, Max int
	maskS, maskL  uint64
}

// Default is the chunker of format version 1 (MinSize, AvgSize, MaxSize).
var Default = func() Chunker {
	c, err := NewChunker(MinSize, AvgSize, MaxSize)
	if err != nil {
		panic(err) // constants
	}
	return c
}()

// Bounds on the chunker's parameters an index may name.
const (
	minAvg = 256
	maxMax = 16 << 20
)

// NewChunker returns the chunker with the given minimum, average (a power
// of two) and maximum chunk size.
func NewChunker(min, avg, max int) (Chunker, error) {
	if avg < minAvg || avg&(avg-1) != 0 {
		return Chunker{}, fmt.Errorf("average chunk size %d: use a power of two of at least %d", avg, minAvg)
	}
	if min < 1 || min > avg || max < avg || max > maxMax {
		return Chunker{}, fmt.Errorf("chunk sizes %d/%d/%d: want 1 <= min <= avg <= max <= %d", min, avg, max, maxMax)
	}
	b := bits.TrailingZeros(uint(avg))
	// The gear hash shifts left, so its high bits depend on the last 64
	// bytes and its low bits on only the last few: the masks take high bits.
	return Chunker{
		Min: min, Avg: avg, Max: max,
		maskS: ^uint64(0) << (64 - (b + 2)),
		maskL: ^uint64(0) << (64 - (b - 2)),
	}, nil
}

// gear is the hash's byte table: the first 8 bytes (little-endian) of
// SHA-256("sysext-gear" || byte), so that anyone can rebuild it.
var gear = func() (t [256]uint64) {
	for i := range t {
		s := sha256.Sum256(append([]byte("sysext-gear"), byte(i)))
		t[i] = binary.LittleEndian.Uint64(s[:8])
	}
	return t
}()

// Cut returns the length of the first chunk of data. data must hold at
// least Max bytes unless it is the end of the input: then a short last
// chunk is all of it.
func (c Chunker) Cut(data []byte) int {
	n := len(data)
	if n <= c.Min {
		return n
	}
	if n > c.Max {
		n = c.Max
	}
	normal := min(c.Avg, n)
	if i, fp := roll(0, data[c.Min:normal], c.maskS); i >= 0 {
		return c.Min + i
	} else if i, _ := roll(fp, data[normal:n], c.maskL); i >= 0 {
		return normal + i
	}
	return n
}

// roll feeds p to the gear hash fp and returns how many bytes it took
// until the hash had no bit of mask set (-1 if it never did) and the hash
// then. Four bytes a round: the hash after each of them is computed from
// the hash before the round, not from the one before it, so that the
// round's dependency chain is one shift and one add, not four of each
// (twice the speed of a byte at a time; the same cuts).
func roll(fp uint64, p []byte, mask uint64) (int, uint64) {
	n := len(p)
	for len(p) >= 4 {
		g0, g1, g2, g3 := gear[p[0]], gear[p[1]], gear[p[2]], gear[p[3]]
		s2 := g0<<1 + g1
		s3 := s2<<1 + g2
		s4 := s3<<1 + g3
		if h := fp<<1 + g0; h&mask == 0 {
			return n - len(p) + 1, h
		}
		if h := fp<<2 + s2; h&mask == 0 {
			return n - len(p) + 2, h
		}
		if h := fp<<3 + s3; h&mask == 0 {
			return n - len(p) + 3, h
		}
		fp = fp<<4 + s4
		if fp&mask == 0 {
			return n - len(p) + 4, fp
		}
		p = p[4:]
	}
	for i, b := range p {
		fp = fp<<1 + gear[b]
		if fp&mask == 0 {
			return n - len(p) + i + 1, fp
		}
	}
	return -1, fp
}

// Lengths returns the chunk lengths of data, in order.
func (c Chunker) Lengths(data []byte) []int64 {
	var out []int64
	for off := 0; off < len(data); {
		n := c.Cut(data[off:])
		out = append(out, int64(n))
		off += n
	}
	return out
}

// splitBuffer is what Split reads at a time, beyond one maximal chunk.
const splitBuffer = 1 << 20

// Split reads r to its end and calls fn with each chunk in order: its
// offset and its bytes, valid only during the call. It holds at most
// 1 MiB plus one maximal chunk in memory.
func (c Chunker) Split(r io.Reader, fn func(off int64, chunk []byte) error) error {
	buf := make([]byte, splitBuffer+c.Max)
	start, end := 0, 0
	eof := false
	var off int64
	for {
		if !eof && end-start < c.Max {
			end = copy(buf, buf[start:end])
			start = 0
			for !eof && end < len(buf) {
				n, err := r.Read(buf[end:])
				end += n
				switch {
				case errors.Is(err, io.EOF):
					eof = true
				case err != nil:
					return err
				}
			}
		}
		if start == end {
			return nil
		}
		n := c.Cut(buf[start:end])
		if err := fn(off, buf[start:start+n]); err != nil {
			return err
		}
		start += n
		off += int64(n)
	}
}
