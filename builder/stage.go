package builder

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"golang.org/x/sys/unix"
)

// stage makes dst a view of src without copying file data: directories
// are recreated (same permissions) and every other entry is a hard link to
// the source's inode, so the tools read the same bytes, modes, owners and
// xattrs. Where a link is impossible (another filesystem, a protected
// file), the entry is copied. Files added later must replace their staged
// link (os.Remove first), never write through it: that would change the
// input. It returns how many entries were copied rather than linked.
func stage(ctx context.Context, src, dst string) (copied int, err error) {
	linkOK := true
	// A file with several names in the tree is copied once and its other
	// names link to that copy, so the image keeps the hard link.
	copies := map[[2]uint64]string{}
	err = filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		if d.IsDir() {
			info, err := d.Info()
			if err != nil {
				return err
			}
			if rel == "." {
				// The image's root: the same on every build, whatever
				// mode the input directory (often a temp dir) has.
				return os.Chmod(dst, 0o755)
			}
			if err := os.Mkdir(target, 0o700); err != nil {
				return err
			}
			// The tools record directory modes; 0700 while we fill it.
			return os.Chmod(target, info.Mode()&(fs.ModePerm|fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky))
		}
		if linkOK {
			lerr := os.Link(p, target)
			if lerr == nil {
				return nil
			}
			if !linkImpossible(lerr) {
				return lerr
			}
			// Another filesystem: every later link fails the same way.
			linkOK = !errors.Is(lerr, syscall.EXDEV)
		}
		var key [2]uint64
		if info, err := d.Info(); err == nil && info.Mode().IsRegular() {
			if st, ok := info.Sys().(*syscall.Stat_t); ok && st.Nlink > 1 {
				key = [2]uint64{uint64(st.Dev), st.Ino}
				if first, ok := copies[key]; ok {
					return os.Link(first, target)
				}
			}
		}
		copied++
		if err := copyEntry(p, target, d); err != nil {
			return err
		}
		if key != ([2]uint64{}) {
			copies[key] = target
		}
		return nil
	})
	if err != nil {
		return copied, fmt.Errorf("stage %s: %w", src, err)
	}
	return copied, nil
}

func linkImpossible(err error) bool {
	return errors.Is(err, syscall.EXDEV) || errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EMLINK) || errors.Is(err, syscall.EACCES)
}

// copyEntry copies one non-directory entry: content and mode for files,
// the target for symlinks, the node for devices and fifos.
func copyEntry(src, dst string, d fs.DirEntry) error {
	info, err := d.Info()
	if err != nil {
		return err
	}
	mode := info.Mode()
	switch {
	case mode&fs.ModeSymlink != 0:
		t, err := os.Readlink(src)
		if err != nil {
			return err
		}
		return os.Symlink(t, dst)
	case mode.IsRegular():
		in, err := os.Open(src)
		if err != nil {
			return err
		}
		defer in.Close()
		out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return err
		}
		// io.Copy between files uses copy_file_range (reflinks where the
		// filesystem has them).
		if _, err := io.Copy(out, in); err != nil {
			out.Close()
			return err
		}
		if err := out.Chmod(mode & (fs.ModePerm | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky)); err != nil {
			out.Close()
			return err
		}
		return out.Close()
	default:
		st, ok := info.Sys().(*syscall.Stat_t)
		if !ok {
			return fmt.Errorf("%s: cannot copy this kind of file", src)
		}
		return unix.Mknod(dst, st.Mode, int(st.Rdev))
	}
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
