package fsimage

import (
	"context"
	"fmt"
	pathpkg "path"
)

// ReadFile returns the content of one regular file inside the image at
// path: name is slash-separated and relative to the image's root (for
// example "etc/extension-release.d/extension-release.NAME" of a confext,
// which Open does not read). At most limit bytes are read; a bigger file,
// a symlink or a directory is an error. Like Open it never mounts.
func ReadFile(ctx context.Context, path, name string, limit int64) ([]byte, error) {
	img, err := openImage(ctx, path)
	if err != nil {
		return nil, err
	}
	defer img.close()
	t := img.tree
	inner := t
	if p, ok := t.(*partTree); ok {
		inner = p.tree // a disk image's partition
	}
	if u, ok := inner.(*unsquashfsTree); ok {
		// Its listing holds only the extension's directories: add the
		// one that holds name.
		if err := u.list(ctx, pathpkg.Dir(name)); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
	}
	data, err := t.readFile(ctx, name, limit)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return data, nil
}
