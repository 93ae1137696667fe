package atomicfile

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/sysext/sysext/internal/ctxio"
)

// TempPrefix starts the name of every temp file this package creates.
const TempPrefix = ".#"

// File is a pending write of one target file. Nothing is visible at the
// target until Commit succeeds. Close (or Abort) after a failed or skipped
// Commit removes the temp file; Close after Commit does nothing.
type File struct {
	*os.File
	target string
	perm   os.FileMode
	done   bool
}

// Create starts an atomic write of target with the given permissions. The
// temp file (".#BASE.<digits>") is locked (flock) while it is open, which
// tells RemoveStale that its writer is alive.
func Create(target string, perm os.FileMode) (*File, error) {
	dir, base := filepath.Split(target)
	if dir == "" {
		dir = "."
	}
	for range 10 {
		f, err := os.CreateTemp(dir, TempPrefix+base+".")
		if err != nil {
			return nil, fmt.Errorf("create temp file for %s: %w", target, err)
		}
		if lockedAt(f, f.Name()) {
			return &File{File: f, target: target, perm: perm}, nil
		}
		// A RemoveStale elsewhere took the new file for a stale one
		// before we locked it, and removes it: take another name.
		f.Close()
	}
	return nil, fmt.Errorf("create temp file for %s: it keeps being removed", target)
}

// lockedAt takes f's lock, without waiting, and checks that path still
// names f.
func lockedAt(f *os.File, path string) bool {
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		return false
	}
	a, err1 := f.Stat()
	b, err2 := os.Lstat(path)
	return err1 == nil && err2 == nil && os.SameFile(a, b)
}

// RemoveStale deletes from dir the temp files Create made whose writer is
// gone (killed, crashed): names ".#BASE.<digits>", regular files that no
// one holds locked. A live writer's file, another program's temp file
// (systemd's ".#NAMEhex", an editor's ".#NAME" link) and anything else are
// left alone. It is for directories shared with other writers, where
// RemoveTemps would be too broad; it returns the names it removed.
func RemoveStale(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil
		}
		return nil, err
	}
	var removed []string
	for _, e := range entries {
		name := e.Name()
		if !e.Type().IsRegular() || !isCreateTemp(name) {
			continue
		}
		p := filepath.Join(dir, name)
		f, err := os.OpenFile(p, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
		if err != nil {
			continue // gone meanwhile, or not ours to open
		}
		// Holding the lock while removing: a writer that created the file
		// but has not locked it yet fails to, and takes another name.
		if lockedAt(f, p) && os.Remove(p) == nil {
			removed = append(removed, name)
		}
		f.Close()
	}
	return removed, nil
}

// isCreateTemp says whether name is one Create makes: ".#" + BASE + "." +
// the decimal digits of os.CreateTemp.
func isCreateTemp(name string) bool {
	rest, ok := strings.CutPrefix(name, TempPrefix)
	i := strings.LastIndexByte(rest, '.')
	if !ok || i <= 0 || i == len(rest)-1 {
		return false
	}
	for _, c := range rest[i+1:] {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// Adopt starts an atomic write of target from a file another program has
// just written at path, in a private directory next to target (same
// filesystem). A tool that creates its output is faster than one handed an
// existing file: opening that with O_TRUNC makes ext4 flush the whole file
// when the tool closes it. path must be a regular file, not a link.
// Commit renames it over target; Close before Commit removes it.
func Adopt(target, path string, perm os.FileMode) (*File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|syscall.O_NOFOLLOW, 0)
	if err != nil {
		os.Remove(path)
		return nil, fmt.Errorf("open the written file %s: %w", path, err)
	}
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		f.Close()
		os.Remove(path)
		return nil, fmt.Errorf("%s is not a regular file", path)
	}
	return &File{File: f, target: target, perm: perm}, nil
}

// TempName returns the temp file's path.
func (f *File) TempName() string { return f.File.Name() }

// Commit fsyncs the temp file, sets its permissions, renames it over the
// target and fsyncs the directory. With replace false an existing target
// is an error (os.ErrExist) and is left alone. The temp file is gone
// afterwards in every case.
func (f *File) Commit(replace bool) error { return f.commit(replace, true) }

// CommitUnsynced is Commit without the fsyncs: the rename is still atomic
// for readers, but a crash soon after may leave the target empty or torn.
// It is for build artifacts that the same inputs rebuild byte for byte,
// never for anything a node boots from.
func (f *File) CommitUnsynced(replace bool) error { return f.commit(replace, false) }

func (f *File) commit(replace, durable bool) error {
	if f.done {
		return errors.New("atomicfile: commit after close")
	}
	defer f.Abort()
	if err := f.File.Chmod(f.perm); err != nil {
		return fmt.Errorf("chmod %s: %w", f.TempName(), err)
	}
	if durable {
		if err := f.File.Sync(); err != nil {
			return fmt.Errorf("fsync %s: %w", f.TempName(), err)
		}
	}
	// The file stays open, and so locked, until it is in place: an
	// unlocked temp file is fair game for RemoveStale.
	if replace {
		if err := os.Rename(f.TempName(), f.target); err != nil {
			return fmt.Errorf("rename into %s: %w", f.target, err)
		}
	} else {
		// link(2) fails when the target exists, so two writers cannot both win.
		if err := os.Link(f.TempName(), f.target); err != nil {
			if errors.Is(err, os.ErrExist) {
				return fmt.Errorf("%s already exists: %w", f.target, os.ErrExist)
			}
			return fmt.Errorf("link into %s: %w", f.target, err)
		}
	}
	f.done = true
	_ = os.Remove(f.TempName())
	if err := f.File.Close(); err != nil {
		return fmt.Errorf("close %s: %w", f.TempName(), err)
	}
	if !durable {
		return nil
	}
	return SyncDir(filepath.Dir(f.target))
}

// Abort removes the temp file unless Commit has succeeded. It is safe to
// call more than once, and is what Close does.
func (f *File) Abort() error {
	if f.done {
		return nil
	}
	f.done = true
	f.File.Close()
	if err := os.Remove(f.TempName()); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// Close aborts the write if it was not committed.
func (f *File) Close() error { return f.Abort() }

// WriteFile atomically replaces target with data.
func WriteFile(target string, data []byte, perm os.FileMode) error {
	f, err := Create(target, perm)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("write %s: %w", f.TempName(), err)
	}
	return f.Commit(true)
}

// WriteFrom atomically writes everything r yields to target, stopping when
// ctx is cancelled. With replace false an existing target is refused.
func WriteFrom(ctx context.Context, target string, r io.Reader, perm os.FileMode, replace bool) (int64, error) {
	f, err := Create(target, perm)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	n, err := io.Copy(f, ctxio.Reader(ctx, r))
	if err != nil {
		return n, fmt.Errorf("write %s: %w", target, err)
	}
	return n, f.Commit(replace)
}

// Symlink atomically points link at target: a temp link is created next to
// it and renamed over the old one, so readers see the old or the new link,
// never none.
func Symlink(target, link string) error {
	dir, base := filepath.Split(link)
	if dir == "" {
		dir = "."
	}
	for i := 0; ; i++ {
		tmp := filepath.Join(dir, fmt.Sprintf("%s%s.link%d", TempPrefix, base, i))
		err := os.Symlink(target, tmp)
		if errors.Is(err, os.ErrExist) && i < 100 {
			continue
		}
		if err != nil {
			return fmt.Errorf("create link %s: %w", tmp, err)
		}
		if err := os.Rename(tmp, link); err != nil {
			os.Remove(tmp)
			return fmt.Errorf("replace link %s: %w", link, err)
		}
		return SyncDir(dir)
	}
}

// SyncDir fsyncs a directory so that a rename in it survives a crash.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("open %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", dir, err)
	}
	return nil
}

// RemoveTemps deletes temp files this package left in dir after a crash
// (SIGKILL, power loss). Callers run it when they take the lock on dir.
func RemoveTemps(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return err
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), TempPrefix) {
			if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
				return err
			}
		}
	}
	return nil
}
