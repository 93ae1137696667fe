package oci

import (
	"context"

	"github.com/sysext/sysext/fsimage"
)

// openImage reads a downloaded image's metadata without hashing it again
// (Download hashed it as it streamed). GPT disk images are recognised but
// not read (nil Info).
func openImage(ctx context.Context, path string, format fsimage.Format) (*fsimage.Info, error) {
	if format == fsimage.GPT {
		return nil, nil
	}
	return fsimage.OpenMetadata(ctx, path)
}

// fsimageOpen reads a file to push: metadata and a fresh digest (never a
// cached one: what we push must be what we hashed).
func fsimageOpen(ctx context.Context, path string) (*fsimage.Info, error) {
	return fsimage.OpenWith(ctx, path, fsimage.Options{Digest: true})
}
