package extract

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// OCI whiteout names (image-spec layer.md).
const (
	whiteoutPrefix = ".wh."
	whiteoutMeta   = ".wh..wh."
	whiteoutOpaque = ".wh..wh..opq"
)

// IsRoot says whether ownership and device nodes can be applied. A
// variable so tests can check the unprivileged behaviour.
var IsRoot = os.Geteuid() == 0

// Stats counts what an extraction did not apply as written.
type Stats struct {
	Entries        int // archive entries read
	SkippedDevices int // character/block devices skipped (not root)
	XattrErrors    int // extended attributes the filesystem refused
}

// Options tune how entries are applied. The zero value applies container
// image layers with everything the process is allowed to, unbounded.
type Options struct {
	// OnWhiteout is called with the root-relative path named by every
	// whiteout (".wh.NAME", with existed telling whether an earlier layer
	// of this Applier had made it) and of every directory made opaque
	// (".wh..wh..opq"), after it is applied.
	OnWhiteout func(path string, opaque, existed bool) error
	// Filter, when set, skips every entry for which it returns false
	// (whiteouts included).
	Filter func(*tar.Header) bool
	// ContentOnly extracts an upstream archive rather than a container
	// layer: names starting with ".wh." are ordinary files, regular files
	// keep their permission bits only (0644 when they have none),
	// directories are 0755, and owners, extended attributes and device
	// nodes are not applied.
	ContentOnly bool
	// Budget, when set, bounds the bytes of file content written (see
	// Budget); several Appliers may share one.
	Budget *Budget
}

// dirMeta is a directory's metadata, applied after all its children are
// written (a read-only directory would refuse them, and every child changes
// the directory's mtime).
type dirMeta struct {
	mode  uint32
	mtime time.Time
}

// Applier applies archive entries, in order, to one directory with
// overlay semantics: a later entry replaces what an earlier one put at its
// path, and (for layers) whiteouts remove it. It never writes outside the
// directory: every name is resolved inside it (Root), the last component
// is replaced, never written through, and a hard link's source is resolved
// the same way. The directory's own mode and owner are the caller's: an
// entry for "./" changes nothing.
type Applier struct {
	root  *Root
	opts  Options
	dirs  map[*node]dirMeta // directories to finish
	seen  map[string]bool   // real paths written by the current layer
	stats Stats
	buf   []byte
}

// NewApplier returns an Applier writing into dir, which must exist. Close
// (or Finish) releases its descriptors.
func NewApplier(dir string, opts Options) (*Applier, error) {
	fi, err := os.Stat(dir)
	if err != nil {
		return nil, err
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("%s is not a directory", dir)
	}
	r, err := OpenRoot(dir, true)
	if err != nil {
		return nil, err
	}
	return &Applier{root: r, opts: opts, dirs: map[*node]dirMeta{}, seen: map[string]bool{}, buf: make([]byte, 256<<10)}, nil
}

// Stats returns the counters so far.
func (a *Applier) Stats() Stats { return a.stats }

// Close releases the Applier's descriptors; Finish does too.
func (a *Applier) Close() error { return a.root.Close() }

// Apply reads one uncompressed tar (a layer) and applies it. Whiteouts
// apply to what earlier layers wrote, never to entries of the same layer.
func (a *Applier) Apply(ctx context.Context, r io.Reader) error {
	a.seen = map[string]bool{}
	tr := tar.NewReader(r)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		hdr, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read tar: %w", err)
		}
		if err := a.ApplyEntry(hdr, tr); err != nil {
			return err
		}
	}
}

// ApplyEntry applies one entry whose content (for a regular file, exactly
// hdr.Size bytes) is read from body. Archives other than tar (zip) are
// applied by describing their members as tar headers.
func (a *Applier) ApplyEntry(hdr *tar.Header, body io.Reader) error {
	a.stats.Entries++
	if a.opts.Filter != nil && !a.opts.Filter(hdr) {
		return nil
	}
	a.root.trim()
	if err := a.entry(hdr, body); err != nil {
		return fmt.Errorf("entry %q: %w", hdr.Name, err)
	}
	return nil
}

// Finish applies directory modes and times, deepest first, and releases
// the descriptors. Call it once after the last entry.
func (a *Applier) Finish() error {
	defer a.Close()
	nodes := make([]*node, 0, len(a.dirs))
	for n := range a.dirs {
		if !n.dead {
			nodes = append(nodes, n)
		}
	}
	sort.Slice(nodes, func(i, j int) bool {
		di, dj := strings.Count(nodes[i].path, "/"), strings.Count(nodes[j].path, "/")
		if di != dj {
			return di > dj
		}
		return nodes[i].path < nodes[j].path
	})
	for _, n := range nodes {
		a.root.trim()
		m := a.dirs[n]
		pfd, err := a.root.fd(n.parent)
		if err != nil {
			return err
		}
		var st unix.Stat_t
		if err := unix.Fstatat(pfd, n.name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil || st.Mode&unix.S_IFMT != unix.S_IFDIR {
			continue // replaced or removed since
		}
		// The last component is a directory (checked just above, and
		// nothing else writes here), so following it is safe.
		if err := unix.Fchmodat(pfd, n.name, m.mode, 0); err != nil {
			return fmt.Errorf("chmod %s: %w", n.path, err)
		}
		if err := setTimes(pfd, n.name, m.mtime); err != nil {
			return fmt.Errorf("set times of %s: %w", n.path, err)
		}
	}
	return nil
}

func (a *Applier) entry(hdr *tar.Header, body io.Reader) error {
	switch hdr.Typeflag {
	case tar.TypeXGlobalHeader, tar.TypeXHeader, tar.TypeGNULongName, tar.TypeGNULongLink:
		return nil
	}
	name, err := CleanName(hdr.Name)
	if err != nil {
		return err
	}
	if name == "" {
		if hdr.Typeflag == tar.TypeDir {
			return nil // the root's mode and owner are the caller's
		}
		return errors.New("the root itself must be a directory")
	}
	dir, base := splitLast(name)
	if !a.opts.ContentOnly && strings.HasPrefix(base, whiteoutPrefix) {
		return a.whiteout(dir, base)
	}
	pd, err := a.root.dirNode(dir, a.createdDir)
	if err != nil {
		return err
	}
	parent := pd.n
	pfd, err := a.root.fd(parent)
	if err != nil {
		return err
	}
	rel := join(parent.path, base)

	if err := a.replace(pfd, base, rel, hdr.Typeflag == tar.TypeDir); err != nil {
		return err
	}

	switch hdr.Typeflag {
	case tar.TypeReg, tar.TypeRegA, tar.TypeGNUSparse:
		if err := a.writeFile(pfd, base, rel, hdr, body); err != nil {
			return err
		}
	case tar.TypeDir:
		if err := unix.Mkdirat(pfd, base, 0o700); err != nil && err != unix.EEXIST {
			return &os.PathError{Op: "mkdir", Path: rel, Err: err}
		}
		n := a.root.child(parent, base, false)
		if !a.opts.ContentOnly {
			if err := a.owner(pfd, base, hdr); err != nil {
				return err
			}
			a.xattrsAt(pfd, base, hdr)
		}
		a.dirs[n] = a.dirMeta(hdr)
	case tar.TypeSymlink:
		if err := unix.Symlinkat(hdr.Linkname, pfd, base); err != nil {
			return &os.PathError{Op: "symlink", Path: rel, Err: err}
		}
		if !a.opts.ContentOnly {
			if err := a.owner(pfd, base, hdr); err != nil {
				return err
			}
			a.xattrsAt(pfd, base, hdr)
		}
		if err := setTimes(pfd, base, hdr.ModTime); err != nil {
			return err
		}
	case tar.TypeLink:
		sfd, sbase, err := a.linkSource(hdr.Linkname)
		if err != nil {
			return err
		}
		if err := unix.Linkat(sfd, sbase, pfd, base, 0); err != nil {
			return &os.PathError{Op: "link", Path: rel, Err: err}
		}
	case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		if a.opts.ContentOnly {
			return nil // nothing an upstream archive ships
		}
		if hdr.Typeflag != tar.TypeFifo && !IsRoot {
			a.stats.SkippedDevices++
			return nil
		}
		if err := a.mknod(pfd, base, rel, hdr); err != nil {
			return err
		}
	default:
		if a.opts.ContentOnly {
			return nil // volume labels and the like: no content
		}
		return fmt.Errorf("unsupported tar entry type %q", hdr.Typeflag)
	}
	a.seen[rel] = true
	return nil
}

// replace removes what is at base before an entry is created there:
// whatever is there is replaced, never written through (an existing file
// may be a hard link shared with another path, an existing symlink may
// point anywhere). A directory stays for a directory entry.
func (a *Applier) replace(pfd int, base, rel string, dirEntry bool) error {
	var st unix.Stat_t
	err := unix.Fstatat(pfd, base, &st, unix.AT_SYMLINK_NOFOLLOW)
	if err == unix.ENOENT {
		return nil
	}
	if err != nil {
		return &os.PathError{Op: "lstat", Path: rel, Err: err}
	}
	isDir := st.Mode&unix.S_IFMT == unix.S_IFDIR
	if isDir && dirEntry {
		return nil
	}
	if err := removeAt(pfd, base, isDir); err != nil {
		return fmt.Errorf("replace %s: %w", rel, err)
	}
	if isDir || st.Mode&unix.S_IFMT == unix.S_IFLNK {
		a.root.removed(rel)
	}
	return nil
}

// mknod creates a device node or a FIFO with the entry's owner, mode and
// time.
func (a *Applier) mknod(pfd int, base, rel string, hdr *tar.Header) error {
	mode := unixMode(hdr)
	switch hdr.Typeflag {
	case tar.TypeChar:
		mode |= unix.S_IFCHR
	case tar.TypeBlock:
		mode |= unix.S_IFBLK
	default:
		mode |= unix.S_IFIFO
	}
	if err := unix.Mknodat(pfd, base, mode, int(unix.Mkdev(uint32(hdr.Devmajor), uint32(hdr.Devminor)))); err != nil {
		return &os.PathError{Op: "mknod", Path: rel, Err: err}
	}
	if err := a.owner(pfd, base, hdr); err != nil {
		return err
	}
	// A device or fifo is not a symlink, so following is safe.
	if err := unix.Fchmodat(pfd, base, unixMode(hdr), 0); err != nil {
		return err
	}
	if err := setTimes(pfd, base, hdr.ModTime); err != nil {
		return err
	}
	return nil
}

func (a *Applier) dirMeta(hdr *tar.Header) dirMeta {
	if a.opts.ContentOnly {
		return dirMeta{mode: 0o755, mtime: hdr.ModTime}
	}
	return dirMeta{mode: unixMode(hdr), mtime: hdr.ModTime}
}

// createdDir records a parent directory the archive did not list; it gets
// the usual 0755 unless a later entry says otherwise.
func (a *Applier) createdDir(n *node) {
	a.dirs[n] = dirMeta{mode: 0o755, mtime: time.Unix(0, 0)}
	a.seen[n.path] = true
}

func (a *Applier) writeFile(pfd int, base, rel string, hdr *tar.Header, body io.Reader) error {
	if hdr.Size < 0 {
		return fmt.Errorf("negative size %d", hdr.Size)
	}
	if err := a.opts.Budget.take(hdr.Size); err != nil {
		return err
	}
	// O_EXCL|O_NOFOLLOW: the name was cleared above, so nothing can be
	// followed or overwritten.
	fd, err := unix.Openat(pfd, base, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return &os.PathError{Op: "create", Path: rel, Err: err}
	}
	f := os.NewFile(uintptr(fd), rel)
	if err := writeSparse(f, body, hdr.Size, a.buf); err != nil {
		f.Close()
		return err
	}
	mode := unixMode(hdr)
	if a.opts.ContentOnly {
		mode &= 0o777
		if mode == 0 {
			mode = 0o644
		}
	} else if IsRoot {
		if err := unix.Fchown(fd, hdr.Uid, hdr.Gid); err != nil {
			f.Close()
			return fmt.Errorf("chown: %w", err)
		}
	}
	// After chown, which clears set-user-ID and set-group-ID bits.
	if err := unix.Fchmod(fd, mode); err != nil {
		f.Close()
		return fmt.Errorf("chmod: %w", err)
	}
	if !a.opts.ContentOnly {
		for k, v := range hdr.PAXRecords {
			if n, ok := strings.CutPrefix(k, "SCHILY.xattr."); ok && !ReservedXattr(n) {
				if err := unix.Fsetxattr(fd, n, []byte(v), 0); err != nil {
					a.stats.XattrErrors++
				}
			}
		}
	}
	if err := f.Close(); err != nil {
		return err
	}
	return setTimes(pfd, base, hdr.ModTime)
}

// sparseBlock is the granularity at which runs of zeros become holes.
const sparseBlock = 4096

var zeroBlock [sparseBlock]byte

// writeSparse copies exactly size bytes from r to the new, empty file f,
// leaving every all-zero block a hole, so that a sparse entry (GNU or PAX
// sparse, which archive/tar reads back as zeros) or any long run of zeros
// takes no space on disk.
func writeSparse(f *os.File, r io.Reader, size int64, buf []byte) error {
	var off int64
	for off < size {
		n := int64(len(buf))
		if size-off < n {
			n = size - off
		}
		if _, err := io.ReadFull(r, buf[:n]); err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return err
		}
		for i := int64(0); i < n; {
			j := min(i+sparseBlock, n)
			if bytes.Equal(buf[i:j], zeroBlock[:j-i]) {
				i = j
				continue
			}
			// Extend the run over the following non-zero blocks.
			for j < n {
				k := min(j+sparseBlock, n)
				if bytes.Equal(buf[j:k], zeroBlock[:k-j]) {
					break
				}
				j = k
			}
			if _, err := f.WriteAt(buf[i:j], off+i); err != nil {
				return err
			}
			i = j
		}
		off += n
	}
	// A trailing hole: the size is what the entry says.
	return f.Truncate(size)
}

// linkSource resolves a hard link's target inside the root: its directory
// like any path, its last component as it is (a symlink is linked, not
// followed). It must exist and not be a directory.
func (a *Applier) linkSource(linkname string) (int, string, error) {
	name, err := CleanName(linkname)
	if err != nil {
		return -1, "", fmt.Errorf("hard link target: %w", err)
	}
	if name == "" {
		return -1, "", errors.New("hard link to the root directory")
	}
	dir, base := splitLast(name)
	d, err := a.root.dirNode(dir, nil)
	if err != nil {
		return -1, "", fmt.Errorf("hard link target %q is not in the tree: %w", linkname, err)
	}
	fd, err := a.root.fd(d.n)
	if err != nil {
		return -1, "", err
	}
	var st unix.Stat_t
	if err := unix.Fstatat(fd, base, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return -1, "", fmt.Errorf("hard link target %q is not in the tree: %w", linkname, err)
	}
	if st.Mode&unix.S_IFMT == unix.S_IFDIR {
		return -1, "", fmt.Errorf("hard link target %q is a directory", linkname)
	}
	return fd, base, nil
}

// whiteout applies ".wh.NAME" (remove NAME from lower layers) and
// ".wh..wh..opq" (hide everything lower layers put in the directory).
func (a *Applier) whiteout(dir, base string) error {
	if base == whiteoutOpaque {
		pd, err := a.root.dirNode(dir, a.createdDir)
		if err != nil {
			return err
		}
		names, err := a.readDir(pd.n)
		if err != nil {
			return err
		}
		for _, name := range names {
			if a.seen[join(pd.n.path, name)] {
				continue
			}
			if err := a.remove(pd.n, name); err != nil {
				return err
			}
		}
		if a.opts.OnWhiteout != nil {
			return a.opts.OnWhiteout(pd.n.path, true, true)
		}
		return nil
	}
	if strings.HasPrefix(base, whiteoutMeta) {
		return nil // other AUFS metadata (.wh..wh.plnk, ...) has no meaning here
	}
	victim := strings.TrimPrefix(base, whiteoutPrefix)
	if victim == "" || victim == "." || victim == ".." || strings.Contains(victim, "/") {
		return fmt.Errorf("whiteout of %q: %w", victim, ErrEscape)
	}
	pd, err := a.root.dirNode(dir, nil)
	if errors.Is(err, os.ErrNotExist) {
		// Nothing below to hide here; the callback still hears of it.
		if a.opts.OnWhiteout != nil {
			return a.opts.OnWhiteout(join(dir, victim), false, false)
		}
		return nil
	}
	if err != nil {
		return err
	}
	rel := join(pd.n.path, victim)
	if a.seen[rel] {
		return nil // whiteouts hide lower layers only
	}
	pfd, err := a.root.fd(pd.n)
	if err != nil {
		return err
	}
	var st unix.Stat_t
	existed := unix.Fstatat(pfd, victim, &st, unix.AT_SYMLINK_NOFOLLOW) == nil
	if err := a.remove(pd.n, victim); err != nil {
		return err
	}
	if a.opts.OnWhiteout != nil {
		return a.opts.OnWhiteout(rel, false, existed)
	}
	return nil
}

func (a *Applier) readDir(n *node) ([]string, error) {
	pfd, err := a.root.fd(n)
	if err != nil {
		return nil, err
	}
	fd, err := unix.Openat(pfd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: n.path, Err: err}
	}
	f := os.NewFile(uintptr(fd), n.path)
	defer f.Close()
	return f.Readdirnames(-1)
}

// remove removes name (and everything below it) from directory n.
func (a *Applier) remove(n *node, name string) error {
	pfd, err := a.root.fd(n)
	if err != nil {
		return err
	}
	var st unix.Stat_t
	if err := unix.Fstatat(pfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err == unix.ENOENT {
		return nil
	} else if err != nil {
		return &os.PathError{Op: "lstat", Path: join(n.path, name), Err: err}
	}
	isDir := st.Mode&unix.S_IFMT == unix.S_IFDIR
	if err := removeAt(pfd, name, isDir); err != nil {
		return fmt.Errorf("remove %s: %w", join(n.path, name), err)
	}
	if isDir || st.Mode&unix.S_IFMT == unix.S_IFLNK {
		a.root.removed(join(n.path, name))
	}
	return nil
}

// removeAt removes name from directory pfd, a directory with everything
// in it, relative to descriptors only (no long path is walked).
func removeAt(pfd int, name string, isDir bool) error {
	if !isDir {
		return unix.Unlinkat(pfd, name, 0)
	}
	if err := unix.Unlinkat(pfd, name, unix.AT_REMOVEDIR); err == nil || err == unix.ENOENT {
		return nil
	}
	fd, err := unix.Openat(pfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	f := os.NewFile(uintptr(fd), name)
	defer f.Close()
	for {
		ents, err := f.ReadDir(1024)
		for _, e := range ents {
			if err := removeAt(fd, e.Name(), e.IsDir()); err != nil && err != unix.ENOENT {
				return err
			}
		}
		if err == io.EOF || len(ents) == 0 {
			break
		}
		if err != nil {
			return err
		}
	}
	return unix.Unlinkat(pfd, name, unix.AT_REMOVEDIR)
}

func (a *Applier) owner(pfd int, base string, hdr *tar.Header) error {
	if !IsRoot {
		return nil
	}
	if err := unix.Fchownat(pfd, base, hdr.Uid, hdr.Gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("chown: %w", err)
	}
	return nil
}

// xattrsAt sets the entry's extended attributes on a directory or symlink.
// Linux has no lsetxattr relative to a descriptor before 6.13; the path
// through /proc/self/fd reaches the directory without walking its path,
// and the l-variant does not follow the last component.
func (a *Applier) xattrsAt(pfd int, base string, hdr *tar.Header) {
	p := ""
	for k, v := range hdr.PAXRecords {
		if n, ok := strings.CutPrefix(k, "SCHILY.xattr."); ok && !ReservedXattr(n) {
			if p == "" {
				p = fmt.Sprintf("/proc/self/fd/%d/%s", pfd, base)
			}
			if err := unix.Lsetxattr(p, n, []byte(v), 0); err != nil {
				a.stats.XattrErrors++
			}
		}
	}
}

// ReservedXattr reports overlayfs's own attributes: a tree extracted here
// may become an overlay layer (an extension merged by systemd-sysext),
// where a planted trusted.overlay.redirect or .opaque would change what the
// merged /usr shows. They are never applied or copied.
func ReservedXattr(name string) bool {
	return strings.HasPrefix(name, "trusted.overlay.") || strings.HasPrefix(name, "user.overlay.")
}

func unixMode(hdr *tar.Header) uint32 { return uint32(hdr.Mode) & 0o7777 }

func setTimes(pfd int, base string, mtime time.Time) error {
	if mtime.IsZero() {
		mtime = time.Unix(0, 0)
	}
	ts := unix.NsecToTimespec(mtime.UnixNano())
	return unix.UtimesNanoAt(pfd, base, []unix.Timespec{ts, ts}, unix.AT_SYMLINK_NOFOLLOW)
}
