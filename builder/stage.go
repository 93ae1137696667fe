package builder

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/sysext/sysext/internal/extract"
)

// stage makes dst a view of src without copying file data: directories
// are recreated (same permissions) and every other entry is a hard link to
// the source's inode, so the tools read the same bytes, modes, owners and
// xattrs. A file that loses its privileges in the image (all but those in
// keep) is a copy without them; where a link is impossible (another
// filesystem, a protected file), the entry is copied too, and a file with
// several names stays one inode. Files added later must replace their
// staged link (os.Remove first), never write through it: that would change
// the input. It returns how many entries were copied rather than linked.
func stage(ctx context.Context, src, dst string, keep map[string]bool) (copied int, err error) {
	res, err := extract.CopyTree(ctx, src, dst, extract.CopyOptions{
		Link:       true,
		Privileges: extract.Privileges{Drop: true, Keep: keep},
	})
	if err != nil {
		return res.Copied, fmt.Errorf("stage %s: %w", src, err)
	}
	return res.Copied, nil
}

// replaceFile writes data at rel inside the staged tree, replacing a staged
// link there without touching the input file it points to.
func replaceFile(stageDir, rel string, data []byte) error {
	p := filepath.Join(stageDir, filepath.FromSlash(rel))
	if err := mkdirAll(stageDir, filepath.Dir(p)); err != nil {
		return err
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Chmod(0o644); err != nil { // whatever the umask
		f.Close()
		return err
	}
	return f.Close()
}

// mkdirAll creates dir (inside stageDir) with mode 0755 whatever the umask.
func mkdirAll(stageDir, dir string) error {
	if dir == stageDir {
		return nil
	}
	fi, err := os.Lstat(dir)
	if err == nil {
		if !fi.IsDir() {
			return fmt.Errorf("%s is in the way of a directory sysext adds", dir)
		}
		return nil
	}
	if err := mkdirAll(stageDir, filepath.Dir(dir)); err != nil {
		return err
	}
	if err := os.Mkdir(dir, 0o755); err != nil {
		return err
	}
	return os.Chmod(dir, 0o755)
}
