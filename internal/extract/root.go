package extract

import (
	"errors"
	"fmt"
	"os"
	"path"
	"strings"

	"golang.org/x/sys/unix"
)

// ErrEscape marks an entry, link or path that would leave its root
// directory. Extraction refuses it.
var ErrEscape = errors.New("points outside the root")

// maxSymlinks bounds symlink resolution along one path, as the kernel's
// ELOOP does.
const maxSymlinks = 40

// maxOpenDirs bounds the directory descriptors a Root keeps open between
// entries (the least recently used are closed).
const maxOpenDirs = 64

// CleanName validates an untrusted path taken from an archive entry (or a
// hard link's target) and returns it relative to the root, cleaned,
// without a leading "/" ("" is the root itself). Absolute names and names
// whose ".." climb above the root are refused rather than rewritten: no
// honest archive contains them.
func CleanName(name string) (string, error) {
	if strings.HasPrefix(name, "/") {
		return "", fmt.Errorf("%q is an absolute path: %w", name, ErrEscape)
	}
	if strings.IndexByte(name, 0) >= 0 {
		return "", fmt.Errorf("%q contains a NUL byte", name)
	}
	depth := 0
	for rest := name; rest != ""; {
		c := rest
		if i := strings.IndexByte(rest, '/'); i >= 0 {
			c, rest = rest[:i], rest[i+1:]
		} else {
			rest = ""
		}
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

// Root resolves untrusted relative paths inside one directory, following
// symlinks the way a chroot would (an absolute link target starts again at
// the root), one component at a time relative to the descriptor of the
// directory reached so far, so that no symlink planted by an earlier entry
// can take a path outside and no system call walks a long path. In strict
// mode a link whose target climbs above the root is refused (extraction);
// otherwise ".." stops at the root as the kernel does after chroot (reading
// a rootfs).
//
// Resolutions of directories are cached. The cache stays right because
// every removal of a directory or symlink is reported (removed), which
// invalidates exactly the resolutions that went through it; creating a name
// that did not exist invalidates nothing, since no cached resolution can
// have gone through a name that was not there. So each entry costs a
// constant number of system calls, whatever the depth of its directory.
type Root struct {
	dir    string // absolute, cleaned
	strict bool
	top    *node
	cache  map[string]*dirRes // directory path as named -> its resolution
	lru    node               // sentinel of the list of nodes with an open fd, most recent first
	open   int
	steps  int // path components resolved, for tests
}

// node is a directory or symlink that a resolution went through, by its
// real path (made of directories only).
type node struct {
	path     string
	name     string
	parent   *node
	children map[string]*node
	link     bool // a symlink
	dead     bool // removed since
	fd       int  // O_PATH descriptor of a directory, -1 when closed
	prev     *node
	next     *node
}

// dirRes is a cached resolution: valid while its directory and every
// symlink it followed are alive (a removed ancestor kills its whole
// subtree, so the directories passed on the way are covered too).
type dirRes struct {
	n     *node
	links int
	deps  []*node
}

func (d *dirRes) valid() bool {
	if d.n.dead {
		return false
	}
	for _, n := range d.deps {
		if n.dead {
			return false
		}
	}
	return true
}

// OpenRoot opens dir for resolution. Close releases its descriptors.
func OpenRoot(dir string, strict bool) (*Root, error) {
	abs, err := absClean(dir)
	if err != nil {
		return nil, err
	}
	fd, err := unix.Open(abs, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: abs, Err: err}
	}
	r := &Root{dir: abs, strict: strict, cache: map[string]*dirRes{}}
	r.top = &node{fd: fd, children: map[string]*node{}}
	r.lru.next, r.lru.prev = &r.lru, &r.lru
	return r, nil
}

func absClean(dir string) (string, error) {
	if strings.HasPrefix(dir, "/") {
		return path.Clean(dir), nil
	}
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	return path.Join(wd, dir), nil
}

// Close closes every descriptor the Root holds.
func (r *Root) Close() error {
	for n := r.lru.next; n != &r.lru; {
		next := n.next
		r.closeFd(n)
		n = next
	}
	if r.top.fd >= 0 {
		unix.Close(r.top.fd)
		r.top.fd = -1
	}
	return nil
}

// Dir is the root directory's absolute path.
func (r *Root) Dir() string { return r.dir }

// Abs returns the host path of a resolved relative path.
func (r *Root) Abs(rel string) string {
	if rel == "" {
		return r.dir
	}
	return r.dir + "/" + rel
}

// ResolveDir returns the real relative path of directory rel, every
// component followed as the kernel would ("a/link/.." is the parent of
// where link points, not "a"). A missing component is an error.
func (r *Root) ResolveDir(rel string) (string, error) {
	r.trim()
	n, _, _, _, err := r.walk(r.top, 0, splitPath(rel), true, true, nil)
	if err != nil {
		return "", withPath(rel, err)
	}
	return n.path, nil
}

// ResolveFile resolves rel (a leading "/" is the root) inside the root,
// following every symlink, and returns its real relative path.
func (r *Root) ResolveFile(rel string) (string, error) {
	r.trim()
	n, leaf, _, _, err := r.walk(r.top, 0, splitPath(rel), false, true, nil)
	if err != nil {
		return "", withPath(rel, err)
	}
	return join(n.path, leaf), nil
}

// IsSymlink reports whether rel's last component is a symlink, its
// directory resolved inside the root.
func (r *Root) IsSymlink(rel string) bool {
	parts := splitPath(rel)
	if len(parts) == 0 {
		return false
	}
	r.trim()
	n, leaf, _, _, err := r.walk(r.top, 0, parts, false, false, nil)
	if err != nil || leaf == "" {
		return false
	}
	fd, err := r.fd(n)
	if err != nil {
		return false
	}
	var st unix.Stat_t
	return unix.Fstatat(fd, leaf, &st, unix.AT_SYMLINK_NOFOLLOW) == nil && st.Mode&unix.S_IFMT == unix.S_IFLNK
}

// dirNode resolves directory rel: from the cache, or from its parent's
// resolution plus one component, so that a deep directory costs one step
// once its parent is known. With created non-nil, missing directories are
// made (mode 0755) and reported.
func (r *Root) dirNode(rel string, created func(*node)) (*dirRes, error) {
	if rel == "" {
		return &dirRes{n: r.top}, nil
	}
	if d := r.cache[rel]; d != nil && d.valid() {
		return d, nil
	}
	parent, base := splitLast(rel)
	start, err := r.dirNode(parent, created)
	if err != nil {
		return nil, err
	}
	n, _, links, deps, err := r.walk(start.n, start.links, []string{base}, true, true, created)
	if err != nil {
		return nil, withPath(rel, err)
	}
	all := make([]*node, 0, len(start.deps)+len(deps))
	all = append(append(all, start.deps...), deps...)
	d := &dirRes{n: n, links: links, deps: all}
	r.cache[rel] = d
	return d, nil
}

// withPath names the directory in a resolution error that does not
// already name it (an *os.PathError or *notDirError for rel itself).
func withPath(rel string, err error) error {
	var pe *os.PathError
	var nd *notDirError
	switch {
	case errors.As(err, &pe) && pe.Path == rel, errors.As(err, &nd) && nd.path == rel:
		return err
	}
	return fmt.Errorf("%s: %w", rel, err)
}

// notDirError says a path that must be a directory (or lead through one)
// is something else.
type notDirError struct{ path string }

func (e *notDirError) Error() string { return e.path + " is not a directory" }
func (e *notDirError) Unwrap() error { return unix.ENOTDIR }

// walk resolves the components todo starting in directory cur. It returns
// the directory reached and, when the last component is not a directory
// (a file, or a symlink not followed), its name. links counts symlinks
// followed so far; deps are the symlinks followed here.
func (r *Root) walk(cur *node, links int, todo []string, mustDir, followLast bool, created func(*node)) (*node, string, int, []*node, error) {
	var deps []*node
	for len(todo) > 0 {
		c := todo[0]
		todo = todo[1:]
		switch c {
		case "", ".":
			continue
		case "..":
			if cur == r.top {
				if r.strict {
					return nil, "", 0, nil, fmt.Errorf("a symlink leads above the root: %w", ErrEscape)
				}
				continue
			}
			cur = cur.parent
			continue
		}
		r.steps++
		last := len(todo) == 0
		fd, err := r.fd(cur)
		if err != nil {
			return nil, "", 0, nil, err
		}
		var st unix.Stat_t
		err = unix.Fstatat(fd, c, &st, unix.AT_SYMLINK_NOFOLLOW)
		if err == unix.ENOENT && mustDir && created != nil {
			if err := unix.Mkdirat(fd, c, 0o755); err != nil {
				return nil, "", 0, nil, &os.PathError{Op: "mkdir", Path: join(cur.path, c), Err: err}
			}
			cur = r.child(cur, c, false)
			created(cur)
			continue
		}
		if err != nil {
			return nil, "", 0, nil, &os.PathError{Op: "lstat", Path: join(cur.path, c), Err: err}
		}
		typ := st.Mode & unix.S_IFMT
		if typ == unix.S_IFLNK && (!last || followLast || mustDir) {
			links++
			if links > maxSymlinks {
				return nil, "", 0, nil, errors.New("too many levels of symbolic links")
			}
			t, err := readlinkat(fd, c)
			if err != nil {
				return nil, "", 0, nil, &os.PathError{Op: "readlink", Path: join(cur.path, c), Err: err}
			}
			deps = append(deps, r.child(cur, c, true))
			if strings.HasPrefix(t, "/") {
				cur = r.top
			}
			todo = append(splitPath(t), todo...)
			continue
		}
		if typ != unix.S_IFDIR {
			if !last || mustDir {
				return nil, "", 0, nil, &notDirError{join(cur.path, c)}
			}
			return cur, c, links, deps, nil
		}
		cur = r.child(cur, c, false)
	}
	return cur, "", links, deps, nil
}

func readlinkat(fd int, name string) (string, error) {
	for size := 256; ; size *= 2 {
		b := make([]byte, size)
		n, err := unix.Readlinkat(fd, name, b)
		if err != nil {
			return "", err
		}
		if n < size {
			return string(b[:n]), nil
		}
		if size >= 1<<16 {
			return "", unix.ENAMETOOLONG
		}
	}
}

// child returns the node of name in directory n, making it if needed.
func (r *Root) child(n *node, name string, link bool) *node {
	if c := n.children[name]; c != nil {
		if c.link == link {
			return c
		}
		r.kill(c) // replaced behind our back: forget the old one
	}
	c := &node{path: join(n.path, name), name: name, parent: n, link: link, fd: -1}
	if !link {
		c.children = map[string]*node{}
	}
	n.children[name] = c
	return c
}

// lookup returns the live node at real path rel, or nil.
func (r *Root) lookup(rel string) *node {
	n := r.top
	if rel == "" {
		return n
	}
	for _, c := range strings.Split(rel, "/") {
		if n = n.children[c]; n == nil {
			return nil
		}
	}
	return n
}

// removed reports that the directory or symlink at real path rel is gone:
// it and everything below it are forgotten, and with them every cached
// resolution that went through them.
func (r *Root) removed(rel string) {
	if n := r.lookup(rel); n != nil && n != r.top {
		r.kill(n)
	}
}

func (r *Root) kill(n *node) {
	for _, c := range n.children {
		r.kill(c)
	}
	n.dead = true
	r.closeFd(n)
	if n.parent != nil && n.parent.children[n.name] == n {
		delete(n.parent.children, n.name)
	}
}

// fd returns an O_PATH descriptor of directory node n, opened relative to
// its parent's without following a symlink. It stays valid until trim.
func (r *Root) fd(n *node) (int, error) {
	if n == r.top {
		return n.fd, nil
	}
	if n.fd >= 0 {
		r.touch(n)
		return n.fd, nil
	}
	pfd, err := r.fd(n.parent)
	if err != nil {
		return -1, err
	}
	fd, err := unix.Openat(pfd, n.name, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, &os.PathError{Op: "open", Path: n.path, Err: err}
	}
	n.fd = fd
	r.open++
	n.next, n.prev = r.lru.next, &r.lru
	r.lru.next.prev = n
	r.lru.next = n
	return fd, nil
}

func (r *Root) touch(n *node) {
	n.prev.next, n.next.prev = n.next, n.prev
	n.next, n.prev = r.lru.next, &r.lru
	r.lru.next.prev = n
	r.lru.next = n
}

func (r *Root) closeFd(n *node) {
	if n.fd < 0 || n == r.top {
		return
	}
	unix.Close(n.fd)
	n.fd = -1
	n.prev.next, n.next.prev = n.next, n.prev
	n.prev, n.next = nil, nil
	r.open--
}

// trim closes the least recently used descriptors beyond maxOpenDirs.
// Descriptors returned by fd are valid until the next trim, so callers
// trim only between operations.
func (r *Root) trim() {
	for r.open > maxOpenDirs {
		r.closeFd(r.lru.prev)
	}
}

func splitLast(rel string) (dir, base string) {
	i := strings.LastIndexByte(rel, '/')
	if i < 0 {
		return "", rel
	}
	return rel[:i], rel[i+1:]
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

func join(dir, base string) string {
	if dir == "" {
		return base
	}
	if base == "" {
		return dir
	}
	return dir + "/" + base
}
