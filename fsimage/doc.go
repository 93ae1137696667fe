// Package fsimage reads extension images without mounting them and without
// root: it recognises the format by its magic (squashfs, EROFS, GPT disk
// image) and reads the extension-release file and unit drop-ins from
// inside.
//
// Invariants: an image is untrusted input. Every file read from it is
// bounded (extension.MaxReleaseSize), paths are looked up inside the image
// only and symlinks are never followed, and a panic of a third-party reader
// on a corrupt image becomes an error. It never writes an image; the only
// write is the optional digest cache attribute (Options.CacheDigest).
//
// Readers: go-diskfs for squashfs (gzip, xz, lzo, zstd), unsquashfs for
// lz4 squashfs, go-erofs for EROFS metadata and uncompressed files, and
// fsck.erofs --extract only for a compressed metadata file. See
// docs/building.md for why.
package fsimage
