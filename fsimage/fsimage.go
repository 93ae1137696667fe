package fsimage

import (
	"github.com/sysext/sysext/extension"
)

// Format is the filesystem of an image file.
type Format string

// Formats we recognise.
const (
	Squashfs Format = "squashfs"
	EROFS    Format = "erofs"
	GPT      Format = "gpt" // a disk image (DDI): its root partition is read
)

// Info is what an image says about itself.
type Info struct {
	Path    string
	Format  Format
	Size    int64
	Digest  string // "sha256:<hex>" of the whole file
	Name    string // NAME of the one usr/lib/extension-release.d/extension-release.NAME
	Release *extension.Release
	// ReleaseBytes is the exact content of the extension-release file (at
	// most extension.MaxReleaseSize): what a byte-identical proof of the
	// merge compares, since parsing drops comments and layout.
	ReleaseBytes []byte
	Meta         extension.Metadata
	Upholds      []string // units named in Upholds= drop-ins under usr/lib/systemd/system/*.target.d
	// DigestCached says Digest was read from the file's cache attribute
	// (Options.CacheDigest), not computed now.
	DigestCached bool
	// SpecialFiles are the image's setuid/setgid files, files with
	// capabilities and device nodes (read with Options.SpecialFiles).
	SpecialFiles []SpecialFile
	// CapabilitiesUnread is set when SpecialFiles could not include file
	// capabilities: the image's reader (unsquashfs) shows no xattrs.
	CapabilitiesUnread bool
	// Compression lists, for an EROFS image, the compressors its
	// superblock names ("lz4", "lzma", "deflate", "zstd"; nil when
	// uncompressed): a node's kernel must have each to mount it
	// (ErofsAlgorithms).
	Compression []string
	// DDI describes a GPT disk image's partitions, verity and signature;
	// nil for a plain squashfs or EROFS image.
	DDI *DDI
}
