package delta

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
)

// The chunk index, format version 1 (docs/format.md "Chunk index"). All
// integers little-endian.
//
//	offset size
//	0      4    magic "SXCI"
//	4      1    version (1)
//	5      1    hash (1 = SHA-256)
//	6      1    chunker (1 = FastCDC, gear table SHA-256("sysext-gear" || byte)[0:8])
//	7      1    reserved (0)
//	8      12   u32 minimum, average, maximum chunk size
//	20     8    u64 image size
//	28     32   the image's SHA-256 (the layer digest)
//	60     4    u32 chunk count
//	64     36×N per chunk: u32 length, its SHA-256
//
// Offsets are the running sum of the lengths. Uncompressed on purpose: the
// digests are random bytes (zstd made a 356-chunk index 12,474 bytes from
// 12,460), and fixed-size records keep the parser trivial.
const (
	Magic          = "SXCI"
	Version        = 1
	HashSHA256     = 1
	ChunkerFastCDC = 1
	headerSize     = 64
	recordSize     = 4 + sha256.Size
)

// MaxIndexSize is the largest chunk index a node reads: 116,000 chunks,
// about 7 GiB of image at 64 KiB.
const MaxIndexSize = 4 << 20

// ErrInvalid is wrapped by every reason a chunk index is refused.
var ErrInvalid = errors.New("invalid chunk index")

// Chunk is one piece of an image: where it is and what it holds.
type Chunk struct {
	Off int64
	Len int64
	Sum [sha256.Size]byte
}

// Index is the chunk index of one image: how the chunker cut it and the
// SHA-256 of each chunk.
type Index struct {
	Chunker Chunker
	Size    int64
	Digest  [sha256.Size]byte // SHA-256 of the whole image
	Chunks  []Chunk
}

// DigestString is the image digest as an OCI digest ("sha256:HEX").
func (ix *Index) DigestString() string { return "sha256:" + hex.EncodeToString(ix.Digest[:]) }

// Build cuts the image r reads with c, hashing each chunk and the whole
// image in the same pass, and returns its index.
func Build(r io.Reader, c Chunker) (*Index, error) {
	ix := &Index{Chunker: c}
	whole := sha256.New()
	h := sha256.New()
	err := c.Split(r, func(off int64, b []byte) error {
		whole.Write(b)
		ix.Chunks = append(ix.Chunks, Chunk{Off: off, Len: int64(len(b)), Sum: sum(h, b)})
		ix.Size = off + int64(len(b))
		return nil
	})
	if err != nil {
		return nil, err
	}
	whole.Sum(ix.Digest[:0])
	return ix, nil
}

// BuildAt is Build for an image that can be read at offsets (a file): the
// whole image's SHA-256 is computed by a second reader at the same time,
// so that on two cores the index costs little more than the digest alone.
func BuildAt(ra io.ReaderAt, size int64, c Chunker) (*Index, error) {
	return BuildAtNotify(ra, size, c, nil)
}

// BuildAtNotify is BuildAt that calls digest with the whole image's
// SHA-256 as soon as that is known, from another goroutine, while the
// chunks may still be cut and hashed: a publisher uploads the image from
// then on. digest is not called when reading the image fails.
func BuildAtNotify(ra io.ReaderAt, size int64, c Chunker, digest func([sha256.Size]byte)) (*Index, error) {
	type result struct {
		sum [sha256.Size]byte
		err error
	}
	done := make(chan result, 1)
	go func() {
		h := sha256.New()
		buf := make([]byte, splitBuffer)
		n, err := io.CopyBuffer(h, io.NewSectionReader(ra, 0, size), buf)
		if err == nil && n != size {
			err = fmt.Errorf("read %d of %d bytes", n, size)
		}
		var r result
		h.Sum(r.sum[:0])
		r.err = err
		if err == nil && digest != nil {
			digest(r.sum)
		}
		done <- r
	}()
	ix := &Index{Chunker: c}
	h := sha256.New()
	err := c.Split(io.NewSectionReader(ra, 0, size), func(off int64, b []byte) error {
		ix.Chunks = append(ix.Chunks, Chunk{Off: off, Len: int64(len(b)), Sum: sum(h, b)})
		ix.Size = off + int64(len(b))
		return nil
	})
	whole := <-done
	if err == nil {
		err = whole.err
	}
	if err != nil {
		return nil, err
	}
	if ix.Size != size {
		return nil, fmt.Errorf("read %d of %d bytes", ix.Size, size)
	}
	ix.Digest = whole.sum
	return ix, nil
}

// sum is h's SHA-256 of b (h is reused, so hashing allocates nothing).
func sum(h hash.Hash, b []byte) (s [sha256.Size]byte) {
	h.Reset()
	h.Write(b)
	h.Sum(s[:0])
	return s
}

// MarshalBinary encodes the index in format version 1.
func (ix *Index) MarshalBinary() ([]byte, error) {
	if len(ix.Chunks) > (MaxIndexSize-headerSize)/recordSize {
		return nil, fmt.Errorf("%d chunks: more than a chunk index may hold (%d bytes); the image is too large for this chunk size", len(ix.Chunks), MaxIndexSize)
	}
	b := make([]byte, headerSize, headerSize+recordSize*len(ix.Chunks))
	copy(b, Magic)
	b[4], b[5], b[6] = Version, HashSHA256, ChunkerFastCDC
	le := binary.LittleEndian
	le.PutUint32(b[8:], uint32(ix.Chunker.Min))
	le.PutUint32(b[12:], uint32(ix.Chunker.Avg))
	le.PutUint32(b[16:], uint32(ix.Chunker.Max))
	le.PutUint64(b[20:], uint64(ix.Size))
	copy(b[28:60], ix.Digest[:])
	le.PutUint32(b[60:], uint32(len(ix.Chunks)))
	for _, c := range ix.Chunks {
		b = le.AppendUint32(b, uint32(c.Len))
		b = append(b, c.Sum[:]...)
	}
	return b, nil
}

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}

// Parse decodes a chunk index and checks that it is well-formed: a known
// version, hash and chunker, chunker parameters a node can use, every
// chunk length within the chunker's bounds (the last one at least 1
// byte), and lengths that add up to the image size. It does not check
// that the index is the one of any particular image: Check does.
func Parse(b []byte) (*Index, error) {
	if len(b) > MaxIndexSize {
		return nil, invalid("%d bytes, more than %d", len(b), MaxIndexSize)
	}
	if len(b) < headerSize {
		return nil, invalid("%d bytes, shorter than its header", len(b))
	}
	if !bytes.Equal(b[:4], []byte(Magic)) {
		return nil, invalid("no %q magic", Magic)
	}
	if b[4] != Version {
		return nil, invalid("format version %d (this sysext reads version %d)", b[4], Version)
	}
	if b[5] != HashSHA256 || b[6] != ChunkerFastCDC || b[7] != 0 {
		return nil, invalid("hash %d, chunker %d, reserved %d: unknown", b[5], b[6], b[7])
	}
	le := binary.LittleEndian
	min, avg, max := le.Uint32(b[8:]), le.Uint32(b[12:]), le.Uint32(b[16:])
	c, err := NewChunker(int(min), int(avg), int(max))
	if err != nil {
		return nil, invalid("%v", err)
	}
	size := le.Uint64(b[20:])
	count := le.Uint32(b[60:])
	if rest := len(b) - headerSize; rest%recordSize != 0 || uint64(rest/recordSize) != uint64(count) {
		return nil, invalid("%d chunks declared, %d bytes of records", count, rest)
	}
	// Every chunk but the last has at least min bytes.
	if size > 1<<62 || uint64(count) > size/uint64(min)+1 || (size > 0) != (count > 0) {
		return nil, invalid("%d chunks for %d bytes with chunks of at least %d", count, size, min)
	}
	ix := &Index{Chunker: c, Size: int64(size), Chunks: make([]Chunk, count)}
	copy(ix.Digest[:], b[28:60])
	var off int64
	for i := range ix.Chunks {
		r := b[headerSize+i*recordSize:]
		n := int64(le.Uint32(r))
		last := i == len(ix.Chunks)-1
		if n > int64(max) || n < 1 || (!last && n < int64(min)) {
			return nil, invalid("chunk %d has %d bytes, outside [%d, %d]", i, n, min, max)
		}
		ch := Chunk{Off: off, Len: n}
		copy(ch.Sum[:], r[4:recordSize])
		ix.Chunks[i] = ch
		off += n
		if off > int64(size) {
			return nil, invalid("the chunks cover more than the %d bytes of the image", size)
		}
	}
	if off != int64(size) {
		return nil, invalid("the chunks cover %d of the %d bytes of the image", off, size)
	}
	return ix, nil
}

// Check says whether the index is for the image of size bytes with digest
// d ("sha256:HEX", the layer's).
func (ix *Index) Check(size int64, d string) error {
	if ix.Size != size {
		return invalid("it is for an image of %d bytes, the layer has %d", ix.Size, size)
	}
	if got := ix.DigestString(); got != d {
		return invalid("it is for image %s, the layer is %s", got, d)
	}
	return nil
}

// Same reports whether two indexes were cut by the same chunker, so that
// their chunk digests can be compared.
func (ix *Index) Same(c Chunker) bool {
	return ix.Chunker.Min == c.Min && ix.Chunker.Avg == c.Avg && ix.Chunker.Max == c.Max
}
