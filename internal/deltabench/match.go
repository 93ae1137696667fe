package deltabench

import (
	"crypto/sha256"
)

// rollMul is the multiplier of the polynomial rolling hash (odd, and with
// no short period modulo 2^64).
const rollMul = 0x100000001b3

// weak is the polynomial hash of p: sum p[i]*rollMul^(len-1-i) mod 2^64.
func weak(p []byte) uint64 {
	var h uint64
	for _, c := range p {
		h = h*rollMul + uint64(c) + 1
	}
	return h
}

// RollingMissing returns the fixed size-byte blocks of newData (at
// multiples of size) whose bytes occur nowhere in olds, found as zsync
// and rsync find them: a rolling hash over every window of the old data,
// confirmed by SHA-256. Each distinct block counts once.
func RollingMissing(newData []byte, size int, olds ...[]byte) []Range {
	blocks := FixedChunks(newData, size)
	byWeak := map[uint64][]int{}
	var filter [1 << 18]uint64 // 2^24 bits, indexed by the weak hash's top bits
	for i, b := range blocks {
		h := weak(newData[b.Off : b.Off+b.Len])
		byWeak[h] = append(byWeak[h], i)
		if b.Len == int64(size) {
			filter[h>>40/64] |= 1 << (h >> 40 % 64)
		}
	}
	found := make([]bool, len(blocks))
	var pow uint64 = 1 // rollMul^size
	for range size {
		pow *= rollMul
	}
	for _, old := range olds {
		if len(old) < size {
			continue
		}
		h := weak(old[:size])
		for i := 0; ; i++ {
			if filter[h>>40/64]&(1<<(h>>40%64)) != 0 {
				var sum [sha256.Size]byte
				computed := false
				for _, j := range byWeak[h] {
					if found[j] || blocks[j].Len != int64(size) {
						continue
					}
					if !computed {
						sum = sha256.Sum256(old[i : i+size])
						computed = true
					}
					if sum == blocks[j].Sum {
						found[j] = true
					}
				}
			}
			if i+size >= len(old) {
				break
			}
			h = h*rollMul + uint64(old[i+size]) + 1 - (uint64(old[i])+1)*pow
		}
		// The short last block, at its aligned place in the old image.
		if last := blocks[len(blocks)-1]; last.Len != int64(size) && int64(len(old)) >= last.Off+last.Len &&
			sha256.Sum256(old[last.Off:last.Off+last.Len]) == last.Sum {
			found[len(blocks)-1] = true
		}
	}
	seen := Set{}
	var out []Range
	for i, b := range blocks {
		if found[i] {
			continue
		}
		if _, ok := seen[b.Sum]; ok {
			continue
		}
		seen[b.Sum] = struct{}{}
		out = append(out, Range{Off: b.Off, Len: b.Len})
	}
	return out
}
