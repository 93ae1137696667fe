package osrelease

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/sysext/sysext/extension"
	"github.com/sysext/sysext/internal/inroot"
	"github.com/sysext/sysext/internal/smallfile"
)

// Paths are where os-release(5) says an OS tree keeps its os-release,
// relative to its root, in the order they are read.
var Paths = []string{"etc/os-release", "usr/lib/os-release"}

// NotFoundError says an OS tree has none of Paths. It matches
// fs.ErrNotExist.
type NotFoundError struct{ Root string }

func (e *NotFoundError) Error() string {
	return fmt.Sprintf("no os-release in %s (looked at %s)", e.Root, strings.Join(Paths, " and "))
}

func (e *NotFoundError) Is(target error) bool { return target == fs.ErrNotExist }

// Read reads the os-release of the OS tree at root ("" or "/" for this
// host): etc/os-release, else usr/lib/os-release, every symlink resolved
// inside root (etc/os-release usually is one). It returns the release and
// the host path of the file read. A file that cannot be read (too large,
// not readable) is passed over for the next, and its error returned when
// neither is read; a file that does not parse is an error.
func Read(root string) (*extension.Release, string, error) {
	if root == "" {
		root = "/"
	}
	var firstErr error
	for _, p := range Paths {
		rel, err := ReadIn(root, p)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			if errors.As(err, new(*ParseError)) {
				return nil, filepath.Join(root, p), err
			}
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		return rel, filepath.Join(root, p), nil
	}
	if firstErr != nil {
		return nil, "", firstErr
	}
	return nil, "", &NotFoundError{Root: root}
}

// ReadIn reads the release file at p, a path as seen inside root ("" or
// "/" for this host), resolving every symlink inside root. Errors name the
// host path.
func ReadIn(root, p string) (*extension.Release, error) {
	f, err := inroot.Open(root, p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return ReadOpen(f)
}

// ReadFile reads the release file at path, a path on this host (relative
// to the working directory, or absolute).
func ReadFile(path string) (*extension.Release, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return ReadOpen(f)
}

// ReadOpen reads a release file already open (through an *os.Root, say);
// errors name f.Name(). It does not close f.
func ReadOpen(f *os.File) (*extension.Release, error) {
	data, err := smallfile.ReadOpen(f, extension.MaxReleaseSize)
	if err != nil {
		return nil, err
	}
	rel, err := extension.ParseRelease(data)
	if err != nil {
		return nil, &ParseError{Path: f.Name(), Err: err}
	}
	return rel, nil
}

// ParseError is a release file that was read but does not parse.
type ParseError struct {
	Path string
	Err  error // an *extension.ParseError: the line and why
}

func (e *ParseError) Error() string { return e.Path + ": " + e.Err.Error() }
func (e *ParseError) Unwrap() error { return e.Err }
