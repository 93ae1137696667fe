package deltabench

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"math/bits"
	"runtime"
	"sync"
)

// Chunk is one piece of an image: where it is and what it holds.
type Chunk struct {
	Off int64
	Len int64
	Sum [sha256.Size]byte
}

// CDC is a FastCDC content-defined chunker (Xia et al., 2016): a gear
// rolling hash, cut points skipped below Min, a stricter mask before Avg
// and a looser one after it (normalized chunking, level 2), a forced cut
// at Max. The gear table and the masks are part of the format: a node and
// a publisher must cut the same bytes at the same places.
type CDC struct {
	Min, Avg, Max int
	maskS, maskL  uint64
}

// NewCDC returns the chunker for an average chunk size avg (a power of
// two), with Min = avg/4 and Max = 4*avg as casync and desync use.
func NewCDC(avg int) (CDC, error) {
	if avg < 256 || avg&(avg-1) != 0 {
		return CDC{}, fmt.Errorf("average chunk size %d: use a power of two of at least 256", avg)
	}
	b := bits.TrailingZeros(uint(avg))
	// The gear hash shifts left, so its high bits depend on the last 64
	// bytes and its low bits on only the last few: the masks take high bits.
	return CDC{
		Min: avg / 4, Avg: avg, Max: avg * 4,
		maskS: ^uint64(0) << (64 - (b + 2)),
		maskL: ^uint64(0) << (64 - (b - 2)),
	}, nil
}

// gear is the hash's byte table: SHA-256 of "sysext-gear" and the byte
// value, first 8 bytes, so that anyone can rebuild it.
var gear = func() (t [256]uint64) {
	for i := range t {
		s := sha256.Sum256([]byte{'s', 'y', 's', 'e', 'x', 't', '-', 'g', 'e', 'a', 'r', byte(i)})
		t[i] = binary.LittleEndian.Uint64(s[:8])
	}
	return t
}()

// Cut returns the length of the first chunk of data (all of it when data
// is shorter than the cut could need).
func (c CDC) Cut(data []byte) int {
	n := len(data)
	if n <= c.Min {
		return n
	}
	if n > c.Max {
		n = c.Max
	}
	normal := c.Avg
	if normal > n {
		normal = n
	}
	var fp uint64
	i := c.Min
	for ; i < normal; i++ {
		fp = fp<<1 + gear[data[i]]
		if fp&c.maskS == 0 {
			return i + 1
		}
	}
	for ; i < n; i++ {
		fp = fp<<1 + gear[data[i]]
		if fp&c.maskL == 0 {
			return i + 1
		}
	}
	return n
}

// Boundaries returns the chunk lengths of data, in order.
func (c CDC) Boundaries(data []byte) []int64 {
	var out []int64
	for off := 0; off < len(data); {
		n := c.Cut(data[off:])
		out = append(out, int64(n))
		off += n
	}
	return out
}

// Chunks cuts data with c and hashes each chunk.
func (c CDC) Chunks(data []byte) []Chunk {
	return hashChunks(data, c.Boundaries(data))
}

// FixedChunks cuts data into size-byte blocks at multiples of size (the
// last one shorter) and hashes each.
func FixedChunks(data []byte, size int) []Chunk {
	var lens []int64
	for off := 0; off < len(data); off += size {
		lens = append(lens, int64(min(size, len(data)-off)))
	}
	return hashChunks(data, lens)
}

// hashChunks hashes the chunks of the given lengths on every core.
func hashChunks(data []byte, lens []int64) []Chunk {
	out := make([]Chunk, len(lens))
	var off int64
	for i, n := range lens {
		out[i] = Chunk{Off: off, Len: n}
		off += n
	}
	workers := runtime.GOMAXPROCS(0)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < len(out); i += workers {
				out[i].Sum = sha256.Sum256(data[out[i].Off : out[i].Off+out[i].Len])
			}
		}()
	}
	wg.Wait()
	return out
}
