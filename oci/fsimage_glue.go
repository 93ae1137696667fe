package oci

import (
	"context"

	"github.com/sysext/sysext/fsimage"
)

// openImage reads a downloaded image's metadata without hashing it again
// (Download hashed it as it streamed). A disk image's dm-verity tree is
// checked against its data: the root hash the manifest names means nothing
// unless the data has it.
func openImage(ctx context.Context, path string, format fsimage.Format) (*fsimage.Info, error) {
	return fsimage.OpenWith(ctx, path, fsimage.Options{Verity: format == fsimage.GPT})
}

// fsimageOpen reads a file to push: metadata and a fresh digest (never a
// cached one: what we push must be what we hashed), and a disk image's
// tree checked against its data.
func fsimageOpen(ctx context.Context, path string) (*fsimage.Info, error) {
	return fsimage.OpenWith(ctx, path, fsimage.Options{Digest: true, Verity: true})
}

// openPushable reads a file to push: its metadata, and with digest a
// fresh digest (never a cached one: what we push must be what we hashed).
// Without digest the caller hashes the file as it makes the chunk index
// (startChunkIndex). Either way a disk image's hash tree is checked
// against its data.
func openPushable(ctx context.Context, path string, digest bool) (*fsimage.Info, error) {
	if digest {
		return fsimageOpen(ctx, path)
	}
	return fsimage.OpenWith(ctx, path, fsimage.Options{Verity: true})
}
