package builder

import (
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"hash/crc32"
	"os"
	"strings"
	"unicode/utf16"
)

// The GPT of a disk image, written here: 512-byte sectors, a protective
// MBR, 128 entries of 128 bytes at LBA 2 (first usable LBA 34), the backup
// entries and header in the last 33 sectors, both tables with their CRC32
// checksums. That is all a Discoverable Disk Image needs; the project's
// reader (fsimage.ReadGPT) and systemd (libblkid) read it back in the
// tests.

const (
	gptEntries   = 128
	gptEntrySize = 128
	gptArraySecs = gptEntries * gptEntrySize / ddiSector // 32
)

// gptPartition is one entry.
type gptPartition struct {
	typ, uuid   string // UUID strings
	first, last uint64 // LBAs
	attrs       uint64
	name        string
}

// writeGPT writes the protective MBR and both tables into f, an image of
// total bytes (a multiple of 512) whose partitions lie between LBA 34 and
// the backup entries.
func writeGPT(f *os.File, total int64, diskUUID string, parts []gptPartition) error {
	sectors := uint64(total / ddiSector)
	if total%ddiSector != 0 || sectors < 2*(gptArraySecs+1)+2 {
		return fmt.Errorf("a disk image of %d bytes", total)
	}
	last := sectors - 1
	firstUsable, lastUsable := uint64(2+gptArraySecs), last-gptArraySecs-1
	le := binary.LittleEndian

	arr := make([]byte, gptEntries*gptEntrySize)
	for i, p := range parts {
		if p.first < firstUsable || p.last > lastUsable || p.first > p.last {
			return fmt.Errorf("partition %d at LBAs %d-%d outside %d-%d", i+1, p.first, p.last, firstUsable, lastUsable)
		}
		e := arr[i*gptEntrySize : (i+1)*gptEntrySize]
		t, err := guidBytes(p.typ)
		if err != nil {
			return err
		}
		u, err := guidBytes(p.uuid)
		if err != nil {
			return err
		}
		copy(e[0:16], t)
		copy(e[16:32], u)
		le.PutUint64(e[32:], p.first)
		le.PutUint64(e[40:], p.last)
		le.PutUint64(e[48:], p.attrs)
		name := utf16.Encode([]rune(p.name))
		if len(name) > 36 {
			return fmt.Errorf("partition name %q is longer than 36 UTF-16 units", p.name)
		}
		for j, c := range name {
			le.PutUint16(e[56+2*j:], c)
		}
	}
	disk, err := guidBytes(diskUUID)
	if err != nil {
		return err
	}
	header := func(self, other, array uint64) []byte {
		h := make([]byte, ddiSector)
		copy(h, "EFI PART")
		le.PutUint32(h[8:], 0x00010000)
		le.PutUint32(h[12:], 92)
		le.PutUint64(h[24:], self)
		le.PutUint64(h[32:], other)
		le.PutUint64(h[40:], firstUsable)
		le.PutUint64(h[48:], lastUsable)
		copy(h[56:72], disk)
		le.PutUint64(h[72:], array)
		le.PutUint32(h[80:], gptEntries)
		le.PutUint32(h[84:], gptEntrySize)
		le.PutUint32(h[88:], crc32.ChecksumIEEE(arr))
		le.PutUint32(h[16:], crc32.ChecksumIEEE(h[:92]))
		return h
	}
	mbr := make([]byte, ddiSector)
	pe := mbr[446:462]
	pe[1], pe[2], pe[3] = 0x00, 0x02, 0x00 // CHS of LBA 1
	pe[4] = 0xee                           // GPT protective
	pe[5], pe[6], pe[7] = 0xff, 0xff, 0xff // CHS: beyond
	le.PutUint32(pe[8:], 1)
	le.PutUint32(pe[12:], uint32(min(sectors-1, 0xffffffff)))
	mbr[510], mbr[511] = 0x55, 0xaa

	for _, w := range []struct {
		b   []byte
		lba uint64
	}{
		{mbr, 0},
		{header(1, last, 2), 1},
		{arr, 2},
		{arr, last - gptArraySecs},
		{header(last, 1, last-gptArraySecs), last},
	} {
		if _, err := f.WriteAt(w.b, int64(w.lba)*ddiSector); err != nil {
			return fmt.Errorf("write the partition table: %w", err)
		}
	}
	return nil
}

// guidBytes encodes a UUID string as GPT stores it: the first three fields
// little-endian, the rest as written.
func guidBytes(s string) ([]byte, error) {
	b, err := hex.DecodeString(strings.ReplaceAll(s, "-", ""))
	if err != nil || len(b) != 16 || len(s) != 36 {
		return nil, fmt.Errorf("UUID %q", s)
	}
	b[0], b[1], b[2], b[3] = b[3], b[2], b[1], b[0]
	b[4], b[5] = b[5], b[4]
	b[6], b[7] = b[7], b[6]
	return b, nil
}
