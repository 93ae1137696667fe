package flix

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
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

// isRoot says whether ownership and device nodes can be applied. A
// variable so tests can check the unprivileged behaviour.
var isRoot = os.Geteuid() == 0

// ApplyStats counts what an extraction did not apply as written.
type ApplyStats struct {
	Entries        int // tar entries read
	SkippedDevices int // character/block devices skipped (not root)
	XattrErrors    int // extended attributes the filesystem refused
}

// ApplyOptions tune how layers are applied. The zero value applies
// everything the process is allowed to.
type ApplyOptions struct {
	// OnWhiteout is called with the root-relative path named by every
	// whiteout (".wh.NAME", with existed telling whether an earlier layer
	// of this Applier had made it) and of every directory made opaque
	// (".wh..wh..opq"), after it is applied.
	OnWhiteout func(path string, opaque, existed bool) error
	// Filter, when set, skips every entry for which it returns false
	// (whiteouts included).
	Filter func(*tar.Header) bool
}

// dirMeta is a directory's metadata, applied after all its children are
// written (a read-only directory would refuse them, and every child changes
// the directory's mtime).
type dirMeta struct {
	mode  uint32
	mtime time.Time
}

// Applier applies layer tars, in order, to one directory with overlay
// semantics. It never writes outside the directory.
type Applier struct {
	root  *root
	opts  ApplyOptions
	dirs  map[string]dirMeta // resolved rel path -> metadata to apply at Finish
	seen  map[string]bool    // paths written by the current layer
	stats ApplyStats
	buf   []byte
}

// NewApplier returns an Applier writing into dir, which must exist.
func NewApplier(dir string, opts ApplyOptions) (*Applier, error) {
	fi, err := os.Stat(dir)
	if err != nil {
		return nil, err
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("%s is not a directory", dir)
	}
	r, err := newRoot(dir, true)
	if err != nil {
		return nil, err
	}
	return &Applier{root: r, opts: opts, dirs: map[string]dirMeta{}, buf: make([]byte, 256<<10)}, nil
}

// Stats returns the counters so far.
func (a *Applier) Stats() ApplyStats { return a.stats }

// Apply reads one uncompressed layer tar and applies it. Whiteouts apply to
// what earlier layers wrote, never to entries of the same layer.
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
		a.stats.Entries++
		if a.opts.Filter != nil && !a.opts.Filter(hdr) {
			continue
		}
		if err := a.entry(hdr, tr); err != nil {
			return fmt.Errorf("entry %q: %w", hdr.Name, err)
		}
	}
}

// Finish applies directory modes and times, deepest first. Call it once
// after the last layer.
func (a *Applier) Finish() error {
	keys := make([]string, 0, len(a.dirs))
	for k := range a.dirs {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return strings.Count(keys[i], "/") > strings.Count(keys[j], "/") })
	for _, k := range keys {
		m := a.dirs[k]
		p := a.root.abs(k)
		fi, err := os.Lstat(p)
		if err != nil || !fi.IsDir() {
			continue // replaced or removed since
		}
		if err := unix.Chmod(p, m.mode); err != nil {
			return fmt.Errorf("chmod %s: %w", k, err)
		}
		if err := setTimes(p, m.mtime); err != nil {
			return fmt.Errorf("set times of %s: %w", k, err)
		}
	}
	return nil
}

func (a *Applier) entry(hdr *tar.Header, body io.Reader) error {
	name, err := cleanName(hdr.Name)
	if err != nil {
		return err
	}
	switch hdr.Typeflag {
	case tar.TypeXGlobalHeader, tar.TypeXHeader, tar.TypeGNULongName, tar.TypeGNULongLink:
		return nil
	}
	if name == "" {
		if hdr.Typeflag == tar.TypeDir {
			a.dirs[""] = dirMeta{mode: unixMode(hdr), mtime: hdr.ModTime}
			return nil
		}
		return errors.New("the root itself must be a directory")
	}
	dir, base := path.Split(name)
	dir = strings.TrimSuffix(dir, "/")
	if strings.HasPrefix(base, whiteoutPrefix) {
		return a.whiteout(dir, base)
	}
	pdir, err := a.root.resolveDir(dir, a.createdDir)
	if err != nil {
		return err
	}
	rel := join(pdir, base)
	target := a.root.abs(rel)

	// Whatever is there is replaced, never written through: an existing
	// file may be a hard link shared with another path, an existing
	// symlink may point anywhere.
	if fi, err := os.Lstat(target); err == nil {
		if fi.IsDir() && hdr.Typeflag == tar.TypeDir {
			// keep the directory and its children
		} else {
			if fi.IsDir() {
				if err := os.RemoveAll(target); err != nil {
					return err
				}
				a.forgetDirs(rel)
				a.root.invalidate()
			} else {
				if err := os.Remove(target); err != nil {
					return err
				}
				if fi.Mode()&os.ModeSymlink != 0 {
					a.root.invalidate()
				}
			}
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return err
	}

	switch hdr.Typeflag {
	case tar.TypeReg, tar.TypeRegA, tar.TypeGNUSparse:
		if err := a.writeFile(target, hdr, body); err != nil {
			return err
		}
	case tar.TypeDir:
		if err := os.Mkdir(target, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
			return err
		}
		if err := a.owner(target, hdr); err != nil {
			return err
		}
		a.xattrs(target, hdr)
		a.dirs[rel] = dirMeta{mode: unixMode(hdr), mtime: hdr.ModTime}
	case tar.TypeSymlink:
		if err := os.Symlink(hdr.Linkname, target); err != nil {
			return err
		}
		a.root.invalidate()
		if err := a.owner(target, hdr); err != nil {
			return err
		}
		a.xattrs(target, hdr)
		if err := setTimes(target, hdr.ModTime); err != nil {
			return err
		}
	case tar.TypeLink:
		src, err := a.linkSource(hdr.Linkname)
		if err != nil {
			return err
		}
		if err := os.Link(src, target); err != nil {
			return err
		}
	case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		mode := unixMode(hdr)
		switch hdr.Typeflag {
		case tar.TypeChar:
			mode |= unix.S_IFCHR
		case tar.TypeBlock:
			mode |= unix.S_IFBLK
		default:
			mode |= unix.S_IFIFO
		}
		if hdr.Typeflag != tar.TypeFifo && !isRoot {
			a.stats.SkippedDevices++
			return nil
		}
		if err := unix.Mknod(target, mode, int(unix.Mkdev(uint32(hdr.Devmajor), uint32(hdr.Devminor)))); err != nil {
			return err
		}
		if err := a.owner(target, hdr); err != nil {
			return err
		}
		if err := unix.Chmod(target, unixMode(hdr)); err != nil {
			return err
		}
		if err := setTimes(target, hdr.ModTime); err != nil {
			return err
		}
	default:
		return fmt.Errorf("unsupported tar entry type %q", hdr.Typeflag)
	}
	a.seen[rel] = true
	return nil
}

// createdDir records a parent directory the layer did not list; it gets
// the usual 0755 unless a later entry says otherwise.
func (a *Applier) createdDir(rel string) {
	a.dirs[rel] = dirMeta{mode: 0o755, mtime: time.Unix(0, 0)}
	a.seen[rel] = true
}

func (a *Applier) writeFile(target string, hdr *tar.Header, body io.Reader) error {
	// O_EXCL|O_NOFOLLOW: the path was cleared above, so nothing can be
	// followed or overwritten.
	f, err := os.OpenFile(target, os.O_WRONLY|os.O_CREATE|os.O_EXCL|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.CopyBuffer(f, body, a.buf); err != nil {
		f.Close()
		return err
	}
	fd := int(f.Fd())
	if isRoot {
		if err := unix.Fchown(fd, hdr.Uid, hdr.Gid); err != nil {
			f.Close()
			return fmt.Errorf("chown: %w", err)
		}
	}
	// After chown, which clears set-user-ID and set-group-ID bits.
	if err := unix.Fchmod(fd, unixMode(hdr)); err != nil {
		f.Close()
		return fmt.Errorf("chmod: %w", err)
	}
	for k, v := range hdr.PAXRecords {
		if n, ok := strings.CutPrefix(k, "SCHILY.xattr."); ok && !reservedXattr(n) {
			if err := unix.Fsetxattr(fd, n, []byte(v), 0); err != nil {
				a.stats.XattrErrors++
			}
		}
	}
	if err := f.Close(); err != nil {
		return err
	}
	return setTimes(target, hdr.ModTime)
}

// linkSource resolves a hard link's target inside the root. Its directory
// is resolved like any path; its last component is linked as it is (a
// symlink is linked, not followed), and must exist and not be a directory.
func (a *Applier) linkSource(linkname string) (string, error) {
	name, err := cleanName(linkname)
	if err != nil {
		return "", fmt.Errorf("hard link target: %w", err)
	}
	if name == "" {
		return "", errors.New("hard link to the root directory")
	}
	dir, base := path.Split(name)
	pdir, err := a.root.resolveDir(strings.TrimSuffix(dir, "/"), nil)
	if err != nil {
		return "", fmt.Errorf("hard link target %q: %w", linkname, err)
	}
	src := a.root.abs(join(pdir, base))
	fi, err := os.Lstat(src)
	if err != nil {
		return "", fmt.Errorf("hard link target %q: %w", linkname, err)
	}
	if fi.IsDir() {
		return "", fmt.Errorf("hard link target %q is a directory", linkname)
	}
	return src, nil
}

// whiteout applies ".wh.NAME" (remove NAME from lower layers) and
// ".wh..wh..opq" (hide everything lower layers put in the directory).
func (a *Applier) whiteout(dir, base string) error {
	if base == whiteoutOpaque {
		pdir, err := a.root.resolveDir(dir, a.createdDir)
		if err != nil {
			return err
		}
		ents, err := os.ReadDir(a.root.abs(pdir))
		if err != nil {
			return err
		}
		for _, e := range ents {
			rel := join(pdir, e.Name())
			if a.seen[rel] {
				continue
			}
			if err := a.remove(rel); err != nil {
				return err
			}
		}
		if a.opts.OnWhiteout != nil {
			return a.opts.OnWhiteout(pdir, true, true)
		}
		return nil
	}
	if strings.HasPrefix(base, whiteoutMeta) {
		return nil // other AUFS metadata (.wh..wh.plnk, ...) has no meaning here
	}
	victim := strings.TrimPrefix(base, whiteoutPrefix)
	if victim == "" || victim == "." || victim == ".." {
		return fmt.Errorf("whiteout of %q: %w", victim, ErrEscape)
	}
	pdir, err := a.root.resolveDir(dir, nil)
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
	rel := join(pdir, victim)
	if a.seen[rel] {
		return nil // whiteouts hide lower layers only
	}
	_, lerr := os.Lstat(a.root.abs(rel))
	if err := a.remove(rel); err != nil {
		return err
	}
	if a.opts.OnWhiteout != nil {
		return a.opts.OnWhiteout(rel, false, lerr == nil)
	}
	return nil
}

func (a *Applier) remove(rel string) error {
	p := a.root.abs(rel)
	fi, err := os.Lstat(p)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if err := os.RemoveAll(p); err != nil {
		return err
	}
	if fi.IsDir() || fi.Mode()&os.ModeSymlink != 0 {
		a.forgetDirs(rel)
		a.root.invalidate()
	}
	return nil
}

// forgetDirs drops pending directory metadata at and below rel.
func (a *Applier) forgetDirs(rel string) {
	for k := range a.dirs {
		if k == rel || strings.HasPrefix(k, rel+"/") {
			delete(a.dirs, k)
		}
	}
}

func (a *Applier) owner(p string, hdr *tar.Header) error {
	if !isRoot {
		return nil
	}
	if err := unix.Lchown(p, hdr.Uid, hdr.Gid); err != nil {
		return fmt.Errorf("chown: %w", err)
	}
	return nil
}

func (a *Applier) xattrs(p string, hdr *tar.Header) {
	for k, v := range hdr.PAXRecords {
		if n, ok := strings.CutPrefix(k, "SCHILY.xattr."); ok && !reservedXattr(n) {
			if err := unix.Lsetxattr(p, n, []byte(v), 0); err != nil {
				a.stats.XattrErrors++
			}
		}
	}
}

// reservedXattr reports overlayfs's own attributes: a tree extracted here
// may become an overlay layer (an extension merged by systemd-sysext), where
// a planted trusted.overlay.redirect or .opaque would change what the
// merged /usr shows. They are never applied.
func reservedXattr(name string) bool {
	return strings.HasPrefix(name, "trusted.overlay.") || strings.HasPrefix(name, "user.overlay.")
}

func unixMode(hdr *tar.Header) uint32 { return uint32(hdr.Mode) & 0o7777 }

func setTimes(p string, mtime time.Time) error {
	if mtime.IsZero() {
		mtime = time.Unix(0, 0)
	}
	ts := unix.NsecToTimespec(mtime.UnixNano())
	return unix.UtimesNanoAt(unix.AT_FDCWD, p, []unix.Timespec{ts, ts}, unix.AT_SYMLINK_NOFOLLOW)
}

func join(dir, base string) string {
	if dir == "" {
		return base
	}
	return dir + "/" + base
}
