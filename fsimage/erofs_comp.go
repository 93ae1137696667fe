package fsimage

import (
	"encoding/binary"
	"fmt"
	"io"
)

// EROFS superblock fields that say how an image is compressed.
const (
	erofsFeatureZeroPadding = 0x1 // compressed data right-aligned in its cluster
	erofsFeatureComprCfgs   = 0x2 // available_compr_algs holds a bitmap of algorithms
)

// ErofsAlgorithms are EROFS's compressors by their on-disk number, with
// the Linux release that first mounts them and the kernel option they
// need (a node's kernel must have every compressor of an image it
// merges), and the first erofs-utils release whose tools write and read
// them (Debian 12 ships 1.5, Debian 13 1.8). lz4hc writes lz4.
var ErofsAlgorithms = []struct {
	Name, Linux, Config, Tools string
}{
	{"lz4", "5.4", "CONFIG_EROFS_FS_ZIP", "1.0"},
	{"lzma", "5.16", "CONFIG_EROFS_FS_ZIP_LZMA", "1.6"},
	{"deflate", "6.6", "CONFIG_EROFS_FS_ZIP_DEFLATE", "1.7"},
	{"zstd", "6.10", "CONFIG_EROFS_FS_ZIP_ZSTD", "1.8"},
}

// ErofsTools is the first erofs-utils release that has alg ("" when
// unknown).
func ErofsTools(alg string) string {
	for _, a := range ErofsAlgorithms {
		if a.Name == alg {
			return a.Tools
		}
	}
	return ""
}

// ErofsNeeds says what a kernel needs to mount EROFS data compressed
// with alg: "Linux >= 5.16 with CONFIG_EROFS_FS_ZIP_LZMA".
func ErofsNeeds(alg string) string {
	for _, a := range ErofsAlgorithms {
		if a.Name == alg {
			return "Linux >= " + a.Linux + " with " + a.Config
		}
	}
	return "a kernel that knows " + alg
}

// ErofsHeadSize is how many bytes at the start of an EROFS image hold
// its superblock (at 1024, inside the first 4 KiB block): what a node
// reads ahead of a download to learn the image's compressors.
const ErofsHeadSize = 4096

// ErofsCompressors reads from an EROFS image's superblock the compressors
// its files may use, in on-disk order: none for an uncompressed image,
// ["lz4"] for one written before compression configurations existed
// (erofs-utils 1.5 writes them too). An algorithm this package does not
// know is named "algorithm N".
func ErofsCompressors(r io.ReaderAt) ([]string, error) {
	var sb [86]byte
	if _, err := r.ReadAt(sb[:], erofsSuperOffset); err != nil {
		return nil, fmt.Errorf("read EROFS superblock: %w", err)
	}
	if binary.LittleEndian.Uint32(sb[0:4]) != erofsMagic {
		return nil, &CorruptError{"EROFS", "no superblock magic"}
	}
	incompat := binary.LittleEndian.Uint32(sb[80:84])
	if incompat&erofsFeatureComprCfgs == 0 {
		if incompat&erofsFeatureZeroPadding != 0 {
			return []string{"lz4"}, nil
		}
		return nil, nil
	}
	bits := binary.LittleEndian.Uint16(sb[84:86])
	var out []string
	for i := range 16 {
		if bits&(1<<i) == 0 {
			continue
		}
		if i < len(ErofsAlgorithms) {
			out = append(out, ErofsAlgorithms[i].Name)
		} else {
			out = append(out, fmt.Sprintf("algorithm %d", i))
		}
	}
	return out, nil
}
