package oci

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"

	"github.com/sysext/sysext/atomicfile"
	"github.com/sysext/sysext/fsimage"
)

// ProgressFunc is told how many bytes of total are done; it is called from
// the transferring goroutine, at most every chunk.
type ProgressFunc func(done, total int64)

// DownloadOptions say where the image goes.
type DownloadOptions struct {
	// Path is the file to create. "" means Dir/FileName of the entry.
	Path string
	// Dir is the directory for the default name (Path == "").
	Dir string
	// Replace an existing file; by default an existing file is an error
	// and is left alone.
	Replace bool
	// MaxResumes bounds how often a cut transfer is resumed with an HTTP
	// Range request (default 5; negative means never).
	MaxResumes int
	// Progress, when set, is called as bytes arrive.
	Progress ProgressFunc
}

// Downloaded describes the image file Download committed.
type Downloaded struct {
	Path    string
	Size    int64
	Digest  digest.Digest // the layer digest, checked over the bytes written
	Resumes int           // how often a cut transfer was resumed
	// Info is what the image says about itself (format, extension-release).
	Info *fsimage.Info
}

// Download streams e's layer from t into a temp file next to the target,
// hashing while it streams (one pass, never a re-read), resuming with an
// HTTP Range request when the connection is cut, then checks size and
// digest, the content's magic (squashfs, EROFS or a GPT disk image) and,
// for our format, that the image's extension-release agrees with the
// manifest annotations; only then it fsyncs and renames into place. On any
// failure nothing is left at the target or next to it, and the temp files
// of downloads killed earlier in that directory are removed.
func Download(ctx context.Context, t Target, e *Entry, opts DownloadOptions) (*Downloaded, error) {
	target := opts.Path
	if target == "" {
		if err := SafeFileName(e.FileName); err != nil {
			return nil, fmt.Errorf("layer %s: %w", e.Layer.Digest, err)
		}
		dir := opts.Dir
		if dir == "" {
			dir = "."
		}
		target = filepath.Join(dir, e.FileName)
	}
	if !opts.Replace {
		if _, err := os.Lstat(target); err == nil {
			return nil, sentinel(os.ErrExist, "%s already exists: remove it or choose another directory", target)
		}
	}
	layer := e.Layer
	if err := layer.Digest.Validate(); err != nil {
		return nil, fmt.Errorf("layer digest %q: %w", layer.Digest, err)
	}
	if layer.Digest.Algorithm() != digest.SHA256 {
		return nil, fmt.Errorf("layer %s: only sha256 digests are supported", layer.Digest)
	}
	// A download killed earlier (SIGKILL, power loss) left its temp file
	// here; a live one holds its file locked and keeps it.
	_, _ = atomicfile.RemoveStale(filepath.Dir(target))
	f, err := atomicfile.Create(target, 0o644)
	if err != nil {
		return nil, err
	}
	defer f.Close() // removes the temp file unless committed
	if err := reserve(f.File, layer.Size); err != nil {
		return nil, fmt.Errorf("%s: reserve %d bytes: %w", target, layer.Size, err)
	}
	res, head, err := stream(ctx, t, layer, f.File, opts)
	if err != nil {
		return nil, err
	}
	format, err := fsimage.DetectBytes(head)
	if err != nil {
		return nil, fmt.Errorf("layer %s: the content %w: refusing to keep it", layer.Digest, err)
	}
	if e.Kind == KindSysext {
		if mt, _ := LayerMediaType(string(format)); mt != layer.MediaType {
			return nil, fmt.Errorf("layer %s: the content is %s but the media type says %s", layer.Digest, format, layer.MediaType)
		}
	}
	info, err := checkImage(ctx, f.TempName(), format, e)
	if err != nil {
		return nil, fmt.Errorf("layer %s: %w", layer.Digest, err)
	}
	if err := f.Commit(opts.Replace); err != nil {
		return nil, err
	}
	res.Path = target
	if info != nil {
		info.Path = target
		info.Digest = layer.Digest.String()
		info.Size = layer.Size
	}
	res.Info = info
	return res, nil
}

// reserve allocates size bytes for f up front, so a full disk fails now,
// not at 90%; a filesystem without fallocate is left to fail on write.
func reserve(f *os.File, size int64) error {
	if size <= 0 {
		return nil
	}
	if err := unix.Fallocate(int(f.Fd()), 0, 0, size); err != nil && !errors.Is(err, unix.EOPNOTSUPP) {
		return err
	}
	return nil
}
