package fsimage

import (
	"bytes"
	"errors"
	"fmt"
	"io"
)

// Sentinel errors; every error this package returns about an image's
// content wraps one of them or says which file and field is wrong.
var (
	// ErrUnknownFormat: the file is neither squashfs, EROFS nor GPT.
	ErrUnknownFormat = errors.New("is not a squashfs, EROFS or GPT image")
	// ErrNoRelease: the image has no usr/lib/extension-release.d/extension-release.NAME.
	ErrNoRelease = errors.New("has no usr/lib/extension-release.d/extension-release.NAME: it is not a system extension")
	// ErrCorrupt: the image's metadata is malformed, or reading it would
	// take more work than an image of its size can need.
	ErrCorrupt = errors.New("corrupt image")
)

// CorruptError says what is wrong in a corrupt or crafted image; it is
// ErrCorrupt.
type CorruptError struct {
	Format string // "squashfs", "EROFS"
	Detail string
}

func (e *CorruptError) Error() string        { return "corrupt " + e.Format + " image: " + e.Detail }
func (e *CorruptError) Is(target error) bool { return target == ErrCorrupt }

// Where the magic numbers are.
const (
	erofsMagic       = 0xE0F5E1E2
	erofsSuperOffset = 1024
)

// magics is the one table of the formats' magic numbers, in the order they
// are tried. A GPT header sits at LBA 1: byte 512 with 512-byte sectors,
// byte 4096 with 4 KiB sectors (systemd-repart --sector-size=4096).
var magics = []struct {
	format Format
	off    int
	magic  []byte
}{
	{Squashfs, 0, []byte("hsqs")},                             // 0x73717368 little-endian
	{EROFS, erofsSuperOffset, []byte{0xE2, 0xE1, 0xF5, 0xE0}}, // 0xE0F5E1E2 little-endian
	{GPT, 512, []byte("EFI PART")},
	{GPT, 4096, []byte("EFI PART")},
}

// HeadSize is how many bytes from the start of a file DetectBytes needs to
// see every magic number.
const HeadSize = 4096 + 8

// DetectBytes tells the format of an image from its first bytes (at least
// HeadSize of them, or the whole file when it is smaller): squashfs ("hsqs"
// at 0), EROFS (0xE0F5E1E2 at 1024) or a GPT disk image ("EFI PART" at 512
// or 4096). Anything else is ErrUnknownFormat.
func DetectBytes(head []byte) (Format, error) {
	for _, m := range magics {
		if len(head) >= m.off+len(m.magic) && bytes.Equal(head[m.off:m.off+len(m.magic)], m.magic) {
			return m.format, nil
		}
	}
	return "", ErrUnknownFormat
}

// Detect is DetectBytes on the start of r.
func Detect(r io.ReaderAt) (Format, error) {
	head := make([]byte, HeadSize)
	n, err := r.ReadAt(head, 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return "", fmt.Errorf("read magic: %w", err)
	}
	return DetectBytes(head[:n])
}

// String returns the format's name.
func (f Format) String() string { return string(f) }
