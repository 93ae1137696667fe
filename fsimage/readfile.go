package fsimage

import (
	"context"
	"errors"
	"fmt"
	"os"
	pathpkg "path"
)

// ReadFile returns the content of one regular file inside the image at
// path: name is slash-separated and relative to the image's root (for
// example "etc/extension-release.d/extension-release.NAME" of a confext,
// which Open does not read). At most limit bytes are read; a bigger file,
// a symlink or a directory is an error. Like Open it never mounts.
func ReadFile(ctx context.Context, path, name string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", path)
	}
	format, err := Detect(f)
	if err != nil {
		if errors.Is(err, ErrUnknownFormat) {
			return nil, fmt.Errorf("%s %w", path, err)
		}
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if format == GPT {
		return nil, fmt.Errorf("%s %w", path, ErrDiskImage)
	}
	t, err := openTree(ctx, f, st.Size(), format)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	defer t.close()
	if u, ok := t.(*unsquashfsTree); ok {
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
