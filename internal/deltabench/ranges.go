package deltabench

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"slices"

	"github.com/klauspost/compress/zstd"

	"github.com/sysext/sysext/delta"
)

// Range is a byte range of the new image that a node must download.
type Range = delta.Range

// Set is the chunk digests a node holds locally.
type Set map[[sha256.Size]byte]struct{}

// Add puts every chunk of cs in the set.
func (s Set) Add(cs []Chunk) {
	for _, c := range cs {
		s[c.Sum] = struct{}{}
	}
}

// Missing returns the ranges of the new image whose chunks are not in
// have, in order, each distinct chunk once (a chunk that repeats inside
// the new image is downloaded once and copied).
func Missing(newChunks []Chunk, have Set) []Range {
	seen := Set{}
	var out []Range
	for _, c := range newChunks {
		if _, ok := have[c.Sum]; ok {
			continue
		}
		if _, ok := seen[c.Sum]; ok {
			continue
		}
		seen[c.Sum] = struct{}{}
		out = append(out, Range{Off: c.Off, Len: c.Len})
	}
	return out
}

// Coalesce merges ranges (sorted by offset) whose gap is at most gap
// bytes, so that one request fetches both and the bytes between; gap 0
// merges only adjacent ranges.
func Coalesce(rs []Range, gap int64) []Range {
	var out []Range
	for _, r := range rs {
		if n := len(out); n > 0 && r.Off-(out[n-1].Off+out[n-1].Len) <= gap {
			out[n-1].Len = r.Off + r.Len - out[n-1].Off
			continue
		}
		out = append(out, r)
	}
	return out
}

// Total is the bytes the ranges cover.
func Total(rs []Range) int64 {
	var n int64
	for _, r := range rs {
		n += r.Len
	}
	return n
}

// IndexSize is the size of a chunk index of cs as a node would download
// it: per chunk the length as a uvarint and the first digestLen bytes of
// its SHA-256, the whole compressed with zstd (the lengths compress, the
// digests do not). Returns the raw and the compressed size.
func IndexSize(cs []Chunk, digestLen int) (raw, compressed int) {
	var b bytes.Buffer
	var v [binary.MaxVarintLen64]byte
	for _, c := range cs {
		b.Write(v[:binary.PutUvarint(v[:], uint64(c.Len))])
		b.Write(c.Sum[:digestLen])
	}
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedBestCompression))
	if err != nil {
		panic(err) // only for bad options, which are constant here
	}
	defer enc.Close()
	return b.Len(), len(enc.EncodeAll(b.Bytes(), nil))
}

// ChunkStats summarises chunk lengths.
type ChunkStats struct {
	Count          int
	Mean, Min, Max int64
}

// Stats returns the count and the mean, smallest and largest length of cs.
func Stats(cs []Chunk) ChunkStats {
	if len(cs) == 0 {
		return ChunkStats{}
	}
	lens := make([]int64, len(cs))
	var sum int64
	for i, c := range cs {
		lens[i] = c.Len
		sum += c.Len
	}
	return ChunkStats{Count: len(cs), Mean: sum / int64(len(cs)), Min: slices.Min(lens), Max: slices.Max(lens)}
}

// CompressedSize is what the ranges of data take compressed one by one
// with zstd at its best level (a chunk store's blobs).
func CompressedSize(data []byte, rs []Range) int64 {
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedBestCompression), zstd.WithEncoderConcurrency(1))
	if err != nil {
		panic(err) // only for bad options, which are constant here
	}
	defer enc.Close()
	var n int64
	var buf []byte
	for _, r := range rs {
		buf = enc.EncodeAll(data[r.Off:r.Off+r.Len], buf[:0])
		n += int64(len(buf))
	}
	return n
}
