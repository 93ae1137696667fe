package deltabench

import (
	"crypto/sha256"
	"runtime"
	"sync"

	"github.com/sysext/sysext/delta"
)

// Chunk is one piece of an image: where it is and what it holds.
type Chunk = delta.Chunk

// CDC is the product's content-defined chunker (package delta) at another
// average size, for measuring how the chunk size matters.
type CDC struct{ delta.Chunker }

// NewCDC returns the chunker for an average chunk size avg (a power of
// two), with min avg/4 and max 4·avg as the product's (delta.Default is
// NewCDC(64 KiB)).
func NewCDC(avg int) (CDC, error) {
	c, err := delta.NewChunker(avg/4, avg, avg*4)
	return CDC{c}, err
}

// Boundaries returns the chunk lengths of data, in order.
func (c CDC) Boundaries(data []byte) []int64 { return c.Lengths(data) }

// Chunks cuts data with c and hashes each chunk (on every core: the
// measurement cuts dozens of images).
func (c CDC) Chunks(data []byte) []Chunk {
	return hashChunks(data, c.Lengths(data))
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
