package verity

import (
	"bytes"
	"context"
	"crypto"
	"crypto/subtle"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"strings"

	// Hash algorithms a tree may name.
	_ "crypto/sha1"
	_ "crypto/sha256"
	_ "crypto/sha512"
)

// SuperblockSize is the size of the superblock veritysetup writes at the
// start of the hash device; the tree starts at the next hash block.
const SuperblockSize = 512

var superMagic = []byte("verity\x00\x00")

// Limits on what a superblock may say: dm-verity's block sizes (512 bytes
// up to 64 KiB in the kernel, 4 KiB in practice) and salt.
const (
	minBlockSize = 512
	maxBlockSize = 64 << 10
	maxSaltSize  = 256
)

// ErrTreeMismatch: the hash tree does not describe the data (a changed
// byte in the data or in the tree).
var ErrTreeMismatch = errors.New("the dm-verity hash tree does not match the data")

// Params are a hash tree's parameters, as its superblock records them
// (veritysetup format, hash type 1, the only one systemd writes).
type Params struct {
	UUID          [16]byte
	Algorithm     string // "sha256", "sha512" or "sha1"
	DataBlockSize uint32
	HashBlockSize uint32
	DataBlocks    uint64
	Salt          []byte
}

// UUIDString formats the superblock's UUID.
func (p Params) UUIDString() string {
	u := p.UUID
	return fmt.Sprintf("%x-%x-%x-%x-%x", u[0:4], u[4:6], u[6:8], u[8:10], u[10:16])
}

// ParseSuperblock reads the 512-byte dm-verity superblock at the start of
// b. Every field is checked against what the kernel accepts.
func ParseSuperblock(b []byte) (Params, error) {
	var p Params
	if len(b) < SuperblockSize {
		return p, errors.New("no dm-verity superblock: the hash partition is shorter than 512 bytes")
	}
	if !bytes.Equal(b[:8], superMagic) {
		return p, errors.New("no dm-verity superblock (\"verity\" magic) at the start of the hash partition")
	}
	le := binary.LittleEndian
	if v := le.Uint32(b[8:12]); v != 1 {
		return p, fmt.Errorf("dm-verity superblock version %d: only version 1 exists", v)
	}
	if ht := le.Uint32(b[12:16]); ht != 1 {
		return p, fmt.Errorf("dm-verity hash type %d: only type 1 (what veritysetup and systemd write) is read", ht)
	}
	copy(p.UUID[:], b[16:32])
	p.Algorithm = strings.ToLower(string(bytes.TrimRight(b[32:64], "\x00")))
	p.DataBlockSize = le.Uint32(b[64:68])
	p.HashBlockSize = le.Uint32(b[68:72])
	p.DataBlocks = le.Uint64(b[72:80])
	saltSize := int(le.Uint16(b[80:82]))
	if saltSize > maxSaltSize {
		return p, fmt.Errorf("dm-verity salt of %d bytes: at most %d", saltSize, maxSaltSize)
	}
	p.Salt = bytes.Clone(b[88 : 88+saltSize])
	if err := p.check(); err != nil {
		return p, err
	}
	return p, nil
}

// Marshal writes the 512-byte superblock for p.
func (p Params) Marshal() []byte {
	b := make([]byte, SuperblockSize)
	le := binary.LittleEndian
	copy(b, superMagic)
	le.PutUint32(b[8:], 1)
	le.PutUint32(b[12:], 1)
	copy(b[16:32], p.UUID[:])
	copy(b[32:64], p.Algorithm)
	le.PutUint32(b[64:], p.DataBlockSize)
	le.PutUint32(b[68:], p.HashBlockSize)
	le.PutUint64(b[72:], p.DataBlocks)
	le.PutUint16(b[80:], uint16(len(p.Salt)))
	copy(b[88:], p.Salt)
	return b
}

func (p Params) check() error {
	for _, s := range []uint32{p.DataBlockSize, p.HashBlockSize} {
		if s < minBlockSize || s > maxBlockSize || s&(s-1) != 0 {
			return fmt.Errorf("dm-verity block size %d: want a power of two from %d to %d", s, minBlockSize, maxBlockSize)
		}
	}
	if _, err := p.hashFunc(); err != nil {
		return err
	}
	if p.DataBlocks == 0 {
		return errors.New("dm-verity superblock covers no data blocks")
	}
	if p.DataBlocks > (1<<63)/uint64(p.DataBlockSize) {
		return fmt.Errorf("dm-verity superblock claims %d data blocks: more than any disk holds", p.DataBlocks)
	}
	return nil
}

func (p Params) hashFunc() (crypto.Hash, error) {
	switch p.Algorithm {
	case "sha256":
		return crypto.SHA256, nil
	case "sha512":
		return crypto.SHA512, nil
	case "sha1":
		return crypto.SHA1, nil
	}
	return 0, fmt.Errorf("dm-verity hash algorithm %q: sysext reads sha256, sha512 and sha1 trees", p.Algorithm)
}

// level is one level of the tree: where its blocks start (in hash blocks
// from the start of the hash device) and how many there are.
type level struct {
	start, count uint64
}

// geometry lays the tree out as veritysetup does: the top level first,
// level 0 (the hashes of the data blocks) last, each hash padded to a power
// of two bytes.
func (p Params) geometry() (levels []level, entrySize int, perBlockBits uint, treeEnd uint64) {
	h, _ := p.hashFunc()
	digest := h.Size()
	entrySize = 1 << bits.Len(uint(digest-1))
	perBlockBits = uint(bits.Len(uint(int(p.HashBlockSize)/entrySize)) - 1)
	n := 0
	for perBlockBits*uint(n) < 64 && (p.DataBlocks-1)>>(perBlockBits*uint(n)) != 0 {
		n++
	}
	levels = make([]level, n)
	pos := uint64(1) // block 0 holds the superblock
	for i := n - 1; i >= 0; i-- {
		shift := perBlockBits * uint(i+1)
		var count uint64
		if shift >= 64 {
			count = 1
		} else {
			count = (p.DataBlocks + (1 << shift) - 1) >> shift
		}
		levels[i] = level{start: pos, count: count}
		pos += count
	}
	return levels, entrySize, perBlockBits, pos
}

// HashDeviceSize is the number of bytes the superblock and the tree take.
func (p Params) HashDeviceSize() int64 {
	_, _, _, end := p.geometry()
	return int64(end) * int64(p.HashBlockSize)
}

// Tree is a hash tree checked against its data.
type Tree struct {
	Params
	RootHash []byte
}

// RootHashHex is the root hash as systemd and veritysetup print it.
func (t *Tree) RootHashHex() string { return hex.EncodeToString(t.RootHash) }

// Verify reads the superblock at the start of hashDev (hashSize bytes),
// recomputes every hash of the tree from data (dataSize bytes) and compares
// it with the stored tree, level by level, as the kernel would on reading
// every block. It returns the root hash, or an error wrapping
// ErrTreeMismatch that names the first block that differs. Memory stays
// constant: one stored hash block and one run of data blocks at a time.
func Verify(ctx context.Context, data io.ReaderAt, dataSize int64, hashDev io.ReaderAt, hashSize int64) (*Tree, error) {
	sb := make([]byte, SuperblockSize)
	if err := readFull(hashDev, sb, 0); err != nil {
		return nil, fmt.Errorf("read the dm-verity superblock: %w", err)
	}
	p, err := ParseSuperblock(sb)
	if err != nil {
		return nil, err
	}
	if need := p.DataBlocks * uint64(p.DataBlockSize); need > uint64(dataSize) {
		return nil, fmt.Errorf("the dm-verity superblock covers %d bytes of data but the data partition has %d", need, dataSize)
	}
	if need := p.HashDeviceSize(); need > hashSize {
		return nil, fmt.Errorf("the dm-verity tree needs %d bytes but the hash partition has %d", need, hashSize)
	}
	root, err := p.verify(ctx, data, hashDev)
	if err != nil {
		return nil, err
	}
	return &Tree{Params: p, RootHash: root}, nil
}

func (p Params) verify(ctx context.Context, data, hashDev io.ReaderAt) ([]byte, error) {
	hf, _ := p.hashFunc()
	h := hf.New()
	levels, entrySize, perBlockBits, _ := p.geometry()
	hbs := int64(p.HashBlockSize)
	digest := func(block []byte, out []byte) {
		h.Reset()
		h.Write(p.Salt)
		h.Write(block)
		h.Sum(out[:0])
	}
	if len(levels) == 0 { // one data block: the root hash is its hash
		block := make([]byte, p.DataBlockSize)
		if err := readFull(data, block, 0); err != nil {
			return nil, fmt.Errorf("read data block 0: %w", err)
		}
		root := make([]byte, hf.Size())
		digest(block, root)
		return root, nil
	}
	perBlock := uint64(1) << perBlockBits
	computed := make([]byte, hbs)
	stored := make([]byte, hbs)
	// Input is read in chunks of at most readChunk bytes (whole blocks):
	// memory stays small whatever block sizes a superblock claims.
	const readChunk = 1 << 20
	in := make([]byte, max(readChunk, maxBlockSize))
	sum := make([]byte, hf.Size())
	for li, lv := range levels {
		// The blocks this level hashes: the data, or the level below.
		src, srcBlockSize, srcCount, srcBase := data, int64(p.DataBlockSize), p.DataBlocks, int64(0)
		what := "data"
		if li > 0 {
			below := levels[li-1]
			src, srcBlockSize, srcCount, srcBase = hashDev, hbs, below.count, int64(below.start)*hbs
			what = fmt.Sprintf("hash tree level %d", li-1)
		}
		chunkBlocks := uint64(len(in)) / uint64(srcBlockSize)
		for j := uint64(0); j < lv.count; j++ {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			first := j * perBlock
			n := min(perBlock, srcCount-first)
			clear(computed)
			for k := uint64(0); k < n; k += chunkBlocks {
				c := min(chunkBlocks, n-k)
				run := in[:int64(c)*srcBlockSize]
				if err := readFull(src, run, srcBase+int64(first+k)*srcBlockSize); err != nil {
					return nil, fmt.Errorf("read %s blocks %d-%d: %w", what, first+k, first+k+c-1, err)
				}
				for b := uint64(0); b < c; b++ {
					digest(run[int64(b)*srcBlockSize:int64(b+1)*srcBlockSize], sum)
					copy(computed[int(k+b)*entrySize:], sum)
				}
			}
			at := int64(lv.start+j) * hbs
			if err := readFull(hashDev, stored, at); err != nil {
				return nil, fmt.Errorf("read hash tree level %d block %d: %w", li, j, err)
			}
			if subtle.ConstantTimeCompare(computed, stored) != 1 {
				return nil, fmt.Errorf("%w: level %d block %d (the hashes of %s blocks %d-%d) differs", ErrTreeMismatch, li, j, what, first, first+n-1)
			}
		}
	}
	top := levels[len(levels)-1]
	if err := readFull(hashDev, stored, int64(top.start)*hbs); err != nil {
		return nil, fmt.Errorf("read the top hash block: %w", err)
	}
	root := make([]byte, hf.Size())
	digest(stored, root)
	return root, nil
}

// readFull reads len(b) bytes at off; io.EOF with a full read is success,
// as io.ReaderAt allows.
func readFull(r io.ReaderAt, b []byte, off int64) error {
	n, err := r.ReadAt(b, off)
	if n == len(b) {
		return nil
	}
	if err == nil || err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}
