// Package fsimage reads extension images without mounting them and without
// root: it recognises the format by its magic (squashfs, EROFS, GPT disk
// image; one table, also used on a download's first bytes; of a disk image
// (DDI) it reads the partition table, picks the root or usr partition with
// its verity and signature partitions, and reads the filesystem inside at
// its offset, see gpt.go) and reads the extension-release file (parsed, and
// its exact bytes in Info.ReleaseBytes for byte-identical proofs) and unit
// drop-ins from inside; ReadFile reads any one bounded file (a confext's
// metadata); Options.SpecialFiles walks the whole tree for setuid/setgid
// files, file capabilities and device nodes.
//
// Invariants: an image is untrusted input. Every file read from it is
// bounded (extension.MaxReleaseSize), paths are looked up inside the image
// only and symlinks are never followed, and a panic of a third-party reader
// on a corrupt image becomes an error. Reading is bounded in work by the
// image's size (a crafted image is ErrCorrupt, never a loop), stops when
// the context is done, and enters no directory twice. It never writes an
// image; the only write is the optional digest cache attribute
// (Options.CacheDigest), believed only on files no one else can write.
//
// Readers: our own squashfs reader (squashfs.go) for every compression
// but xz with branch filters, which goes to unsquashfs; go-erofs for EROFS
// directories and plain files, through a bounded io.ReaderAt; for a
// compressed EROFS metadata file, dump.erofs plus lz4 in Go, or fsck.erofs
// --extract when it spans several clusters. See docs/building.md for why.
package fsimage
