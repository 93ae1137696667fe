package flix

import (
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strings"
)

// ErrEscape marks an entry, link or path that would leave its root
// directory. Extraction refuses it.
var ErrEscape = errors.New("points outside the root")

// maxSymlinks bounds symlink resolution, as the kernel's ELOOP does.
const maxSymlinks = 40

// cleanName validates an untrusted path taken from a tar entry (or a hard
// link's target) and returns it relative to the root, cleaned, without a
// leading "/" ("" is the root itself). Absolute names and names whose ".."
// climb above the root are refused rather than rewritten: no honest layer
// contains them.
func cleanName(name string) (string, error) {
	if strings.HasPrefix(name, "/") {
		return "", fmt.Errorf("%q is an absolute path: %w", name, ErrEscape)
	}
	if strings.IndexByte(name, 0) >= 0 {
		return "", fmt.Errorf("%q contains a NUL byte", name)
	}
	depth := 0
	for _, c := range strings.Split(name, "/") {
		switch c {
		case "", ".":
		case "..":
			depth--
			if depth < 0 {
				return "", fmt.Errorf("%q climbs above the root with '..': %w", name, ErrEscape)
			}
		default:
			depth++
		}
	}
	c := path.Clean(name)
	if c == "." {
		return "", nil
	}
	return c, nil
}

// root resolves untrusted relative paths inside one directory, following
// symlinks the way a chroot would (an absolute link target starts again at
// the root), component by component with Lstat, so that no symlink planted
// by an earlier entry or layer can take a path outside. In strict mode a
// link whose target climbs above the root is refused (extraction); in
// clamp mode ".." stops at the root as the kernel does after chroot
// (reading a rootfs).
type root struct {
	dir    string            // absolute, cleaned
	strict bool              // refuse links climbing above the root
	cache  map[string]string // directory rel path -> resolved rel path
}

func newRoot(dir string, strict bool) (*root, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	return &root{dir: abs, strict: strict, cache: map[string]string{}}, nil
}

// abs returns the host path of a resolved relative path.
func (r *root) abs(rel string) string {
	if rel == "" {
		return r.dir
	}
	return r.dir + "/" + rel
}

// invalidate forgets cached resolutions; called whenever a directory or a
// symlink is removed or created over something else.
func (r *root) invalidate() {
	if len(r.cache) > 0 {
		r.cache = map[string]string{}
	}
}

// resolveDir returns the resolved relative path of directory rel (already
// cleaned). With created non-nil, missing components are created as
// directories (mode 0755) and reported to it; with nil they are an error.
func (r *root) resolveDir(rel string, created func(string)) (string, error) {
	if rel == "" {
		return "", nil
	}
	if v, ok := r.cache[rel]; ok {
		return v, nil
	}
	res, err := r.resolve(rel, true, true, created)
	if err != nil {
		return "", err
	}
	r.cache[rel] = res
	return res, nil
}

// resolve walks rel inside the root. The last component is followed only
// when followLast; with mustDir every component must end up a directory.
func (r *root) resolve(rel string, followLast, mustDir bool, created func(string)) (string, error) {
	create := created != nil
	var cur []string
	todo := splitPath(rel)
	links := 0
	for len(todo) > 0 {
		c := todo[0]
		todo = todo[1:]
		switch c {
		case "", ".":
			continue
		case "..":
			if len(cur) == 0 {
				if r.strict {
					return "", fmt.Errorf("%s: a symlink leads above the root: %w", rel, ErrEscape)
				}
				continue
			}
			cur = cur[:len(cur)-1]
			continue
		}
		p := strings.Join(append(cur, c), "/")
		last := len(todo) == 0
		fi, err := os.Lstat(r.abs(p))
		if errors.Is(err, os.ErrNotExist) && mustDir && create {
			if err := os.Mkdir(r.abs(p), 0o755); err != nil {
				return "", err
			}
			created(p)
			cur = append(cur, c)
			continue
		}
		if err != nil {
			return "", err
		}
		if fi.Mode()&os.ModeSymlink != 0 && (!last || followLast || mustDir) {
			links++
			if links > maxSymlinks {
				return "", fmt.Errorf("%s: too many levels of symbolic links", rel)
			}
			t, err := os.Readlink(r.abs(p))
			if err != nil {
				return "", err
			}
			if strings.HasPrefix(t, "/") {
				cur = nil
			}
			todo = append(splitPath(t), todo...)
			continue
		}
		if !fi.IsDir() && (!last || mustDir) {
			return "", fmt.Errorf("%s: %s is not a directory", rel, p)
		}
		cur = append(cur, c)
	}
	return strings.Join(cur, "/"), nil
}

// resolveFile resolves rel inside the root, following every symlink
// (clamp semantics are the caller's choice through r.strict).
func (r *root) resolveFile(rel string) (string, error) {
	return r.resolve(strings.TrimPrefix(rel, "/"), true, false, nil)
}

func splitPath(p string) []string {
	parts := strings.Split(p, "/")
	out := parts[:0]
	for _, s := range parts {
		if s != "" && s != "." {
			out = append(out, s)
		}
	}
	return out
}

// notFound shortens a missing path's error: the caller names the path.
func notFound(err error) error {
	if errors.Is(err, os.ErrNotExist) {
		return os.ErrNotExist
	}
	return err
}
