package fsimage

import (
	"bytes"
	"encoding/binary"
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
)

// Magic numbers and where they are.
const (
	squashfsMagic    = "hsqs" // little-endian 0x73717368 at offset 0
	erofsMagic       = 0xE0F5E1E2
	erofsSuperOffset = 1024
	gptMagic         = "EFI PART" // at LBA 1 (512-byte sectors)
	gptOffset        = 512
)

// Detect tells the format of an image from its magic numbers: squashfs
// ("hsqs" at 0), EROFS (0xE0F5E1E2 at 1024) or a GPT disk image ("EFI PART"
// at 512). Anything else is ErrUnknownFormat.
func Detect(r io.ReaderAt) (Format, error) {
	var b [8]byte
	if n, err := r.ReadAt(b[:4], 0); n == 4 && bytes.Equal(b[:4], []byte(squashfsMagic)) {
		return Squashfs, nil
	} else if err != nil && !errors.Is(err, io.EOF) {
		return "", fmt.Errorf("read magic: %w", err)
	}
	if n, _ := r.ReadAt(b[:4], erofsSuperOffset); n == 4 && binary.LittleEndian.Uint32(b[:4]) == erofsMagic {
		return EROFS, nil
	}
	if n, _ := r.ReadAt(b[:8], gptOffset); n == 8 && bytes.Equal(b[:8], []byte(gptMagic)) {
		return GPT, nil
	}
	return "", ErrUnknownFormat
}

// String returns the format's name.
func (f Format) String() string { return string(f) }
