package inroot

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/sysext/sysext/internal/smallfile"
)

// maxSymlinks is the kernel's limit on symlinks followed in one lookup
// (MAXSYMLINKS), so a loop fails the same way here as there.
const maxSymlinks = 40

// IsHost reports whether root is the running system, where paths need no
// resolution.
func IsHost(root string) bool { return root == "" || filepath.Clean(root) == "/" }

// Join returns the host path of p, a path as seen inside root, with every
// symlink on the way (the last component's too) resolved inside root. A
// component that does not exist ends the walk: it and the rest are appended
// as they are, since nothing there can be a symlink yet; a ".." after it is
// an error, as it is for the kernel. The result is clean and under root.
func Join(root, p string) (string, error) {
	return resolve(root, p, true)
}

// JoinParent is Join for everything but the last component, which is
// appended as it is: for operating on a symlink itself (readlink, lstat,
// replacing it by rename).
func JoinParent(root, p string) (string, error) {
	return resolve(root, p, false)
}

func resolve(root, p string, followLast bool) (string, error) {
	if !filepath.IsAbs(p) {
		p = "/" + p
	}
	if IsHost(root) {
		return filepath.Clean(p), nil
	}
	root = filepath.Clean(root)
	var done []string // resolved components below root
	todo := splitPath(p)
	links := 0
	for len(todo) > 0 {
		c := todo[0]
		todo = todo[1:]
		switch c {
		case "", ".":
			continue
		case "..":
			if len(done) > 0 {
				done = done[:len(done)-1]
			}
			continue
		}
		if len(todo) == 0 && !followLast {
			done = append(done, c)
			break
		}
		cur := filepath.Join(root, filepath.Join(append(done, c)...))
		fi, err := os.Lstat(cur)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
				// Nothing below a missing file or a non-directory can be a
				// symlink: the rest is used as it is, and fails where the
				// kernel would.
				for _, r := range todo {
					if r == ".." {
						return "", &fs.PathError{Op: "resolve", Path: p, Err: err}
					}
				}
				done = append(done, c)
				for _, r := range todo {
					if r != "" && r != "." {
						done = append(done, r)
					}
				}
				todo = nil
				break
			}
			return "", &fs.PathError{Op: "resolve", Path: p, Err: err}
		}
		if fi.Mode()&fs.ModeSymlink == 0 {
			done = append(done, c)
			continue
		}
		links++
		if links > maxSymlinks {
			return "", &fs.PathError{Op: "resolve", Path: p, Err: syscall.ELOOP}
		}
		target, err := os.Readlink(cur)
		if err != nil {
			return "", &fs.PathError{Op: "resolve", Path: p, Err: err}
		}
		if filepath.IsAbs(target) {
			done = done[:0] // an absolute target starts again at the tree's root
		}
		todo = append(splitPath(target), todo...)
	}
	return filepath.Join(root, filepath.Join(done...)), nil
}

func splitPath(p string) []string { return strings.Split(p, "/") }

// Open opens p, a path as seen inside root, for reading, resolving every
// symlink inside root.
func Open(root, p string) (*os.File, error) {
	if IsHost(root) {
		if !filepath.IsAbs(p) {
			p = "/" + p
		}
		return os.Open(p)
	}
	if haveOpenat2() {
		f, err := openat2(root, p)
		if !errors.Is(err, errNoOpenat2) {
			return f, err
		}
	}
	return openWalk(root, p)
}

// openWalk is Open without openat2: the path is resolved by Join and its
// last component opened without following a symlink, so a link placed
// there after the walk is refused rather than followed.
func openWalk(root, p string) (*os.File, error) {
	full, err := Join(root, p)
	if err != nil {
		return nil, err
	}
	fd, err := unix.Open(full, unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: full, Err: err}
	}
	return os.NewFile(uintptr(fd), full), nil
}

var errNoOpenat2 = errors.New("openat2 unavailable")

var openat2State struct {
	once sync.Once
	ok   bool
}

// forceWalk makes Open use the component walk (tests compare both).
var forceWalk bool

func haveOpenat2() bool {
	if forceWalk {
		return false
	}
	openat2State.once.Do(func() {
		fd, err := unix.Openat2(unix.AT_FDCWD, "/", &unix.OpenHow{Flags: unix.O_PATH | unix.O_CLOEXEC, Resolve: unix.RESOLVE_IN_ROOT})
		if err == nil {
			unix.Close(fd)
			openat2State.ok = true
		}
	})
	return openat2State.ok
}

func openat2(root, p string) (*os.File, error) {
	dirfd, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: root, Err: err}
	}
	defer unix.Close(dirfd)
	rel := strings.TrimLeft(p, "/")
	if rel == "" {
		rel = "."
	}
	// For messages: the path as the tree sees it, ".." stopping at its root.
	name := filepath.Join(root, filepath.Clean("/"+p))
	how := &unix.OpenHow{Flags: unix.O_RDONLY | unix.O_CLOEXEC, Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS}
	for range 8 {
		fd, err := unix.Openat2(dirfd, rel, how)
		switch {
		case err == nil:
			return os.NewFile(uintptr(fd), name), nil
		case errors.Is(err, unix.EAGAIN), errors.Is(err, unix.EINTR):
			continue // a rename raced the lookup; the kernel asks to retry
		case errors.Is(err, unix.ENOSYS):
			return nil, errNoOpenat2
		default:
			return nil, &fs.PathError{Op: "open", Path: name, Err: err}
		}
	}
	return nil, &fs.PathError{Op: "open", Path: name, Err: unix.EAGAIN}
}

// ReadFile reads p inside root when it has at most limit bytes; else a
// *smallfile.TooLargeError. Errors name the host path.
func ReadFile(root, p string, limit int64) ([]byte, error) {
	f, err := Open(root, p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return smallfile.ReadOpen(f, limit)
}

// ReadDir lists the directory p inside root.
func ReadDir(root, p string) ([]fs.DirEntry, error) {
	f, err := Open(root, p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	ents, err := f.ReadDir(-1)
	if err != nil {
		return nil, &fs.PathError{Op: "readdir", Path: f.Name(), Err: err}
	}
	return ents, nil
}

// Stat is os.Stat of p inside root.
func Stat(root, p string) (fs.FileInfo, error) {
	full, err := Join(root, p)
	if err != nil {
		return nil, err
	}
	return os.Lstat(full) // Join followed every symlink already
}
