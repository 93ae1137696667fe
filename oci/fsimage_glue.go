package oci

import (
	"context"
	"fmt"

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

// openPushable reads a file to push: its metadata, and a fresh digest
// (never a cached one: what we push must be what we hashed). With
// chunkIndex the digest comes from the same read that makes the file's
// chunk index, returned encoded. Either way a disk image's hash tree is
// checked against its data.
func openPushable(ctx context.Context, path string, chunkIndex bool) (*fsimage.Info, []byte, error) {
	if !chunkIndex {
		info, err := fsimageOpen(ctx, path)
		return info, nil, err
	}
	info, err := fsimage.OpenWith(ctx, path, fsimage.Options{Verity: true})
	if err != nil {
		return nil, nil, err
	}
	ix, b, err := ChunkIndexFile(ctx, path)
	if err != nil {
		return nil, nil, err
	}
	if ix.Size != info.Size {
		return nil, nil, fmt.Errorf("%s changed while it was read (%d, then %d bytes)", path, info.Size, ix.Size)
	}
	info.Digest = ix.DigestString()
	return info, b, nil
}
