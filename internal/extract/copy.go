package extract

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"syscall"

	"golang.org/x/sys/unix"
)

// CopyOptions tune CopyTree. The zero value copies everything: hard-link
// groups, modes, owners (as root) and extended attributes, device nodes
// included.
type CopyOptions struct {
	// Link makes each non-directory a hard link to its source where the
	// filesystem allows, which the callers use for trees that are only
	// read (the source and the copy then share the inode: never write
	// through either). Where a link is impossible the entry is copied.
	Link bool
	// Privileges drops set-user-ID/set-group-ID bits and file
	// capabilities: such a file is copied without them, never linked.
	Privileges Privileges
	// Prune, when set, is asked about every directory ("/proc"): when it
	// returns true the directory is made but its content left out.
	Prune func(rel string) bool
	// SkipSpecial leaves out device nodes and sockets.
	SkipSpecial bool
	// RootMode is the mode of dst itself (default 0755): the tree's root
	// is the caller's, whatever mode the source directory has.
	RootMode fs.FileMode
}

// CopyResult says what CopyTree did other than link.
type CopyResult struct {
	Copied  int      // entries copied rather than linked (Link set)
	Dropped []string // files copied without their privileges ("/usr/bin/su")
}

// CopyTree makes dst (an existing, empty directory) a copy of src, never
// following a symlink: directories are recreated, symlinks recreated with
// their targets, other entries linked or copied with their content, mode,
// owner and extended attributes (overlayfs's own never: see
// ReservedXattr). Names that are hard links of one another in src stay one
// inode in dst. Directory modes are applied last, deepest first, so that a
// read-only directory of src does not stop its own copy.
func CopyTree(ctx context.Context, src, dst string, opts CopyOptions) (CopyResult, error) {
	type pending struct {
		p    string
		mode fs.FileMode
	}
	var dirs []pending
	c := &fileCopier{opts: opts, linkOK: opts.Link, copies: map[[3]uint64]string{}}
	rootMode := opts.RootMode
	if rootMode == 0 {
		rootMode = 0o755
	}
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
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
		info, err := d.Info()
		if err != nil {
			return err
		}
		mode := info.Mode()
		abs := "/" + filepath.ToSlash(rel)
		switch {
		case d.IsDir():
			if rel == "." {
				dirs = append(dirs, pending{dst, rootMode})
				return nil
			}
			if err := os.Mkdir(target, 0o700); err != nil {
				return err
			}
			chown(target, info)
			copyXattrs(p, target, false)
			dirs = append(dirs, pending{target, mode})
			if opts.Prune != nil && opts.Prune(abs) {
				return filepath.SkipDir
			}
			return nil
		case mode&fs.ModeSymlink != 0:
			l, err := os.Readlink(p)
			if err != nil {
				return err
			}
			if err := os.Symlink(l, target); err != nil {
				return err
			}
			chown(target, info)
			copyXattrs(p, target, false)
			return nil
		case mode&(fs.ModeDevice|fs.ModeSocket) != 0 && opts.SkipSpecial:
			return nil
		}
		return c.file(p, target, abs, info)
	})
	if err != nil {
		return c.res, fmt.Errorf("copy %s: %w", src, err)
	}
	sort.SliceStable(dirs, func(i, j int) bool { return len(dirs[i].p) > len(dirs[j].p) })
	for _, d := range dirs {
		if err := os.Chmod(d.p, d.mode&(fs.ModePerm|fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky)); err != nil {
			return c.res, err
		}
	}
	return c.res, nil
}

// fileCopier copies the entries of a tree that are neither directories nor
// symlinks, keeping their hard links.
type fileCopier struct {
	opts   CopyOptions
	res    CopyResult
	linkOK bool // opts.Link, until a link fails because src is on another filesystem
	// Source inode (and whether its copy drops privileges: a name kept by
	// the policy does not share an inode with one that is not) -> its
	// first copy.
	copies map[[3]uint64]string
}

// file links or copies p (abs in the image) to target; a privileged file
// the policy does not keep is copied without its privileges.
func (c *fileCopier) file(p, target, abs string, info fs.FileInfo) error {
	mode := info.Mode()
	drop := false
	if mode.IsRegular() && c.opts.Privileges.drops(abs) {
		caps, err := HasCapabilities(p)
		if err != nil {
			return err
		}
		drop = caps || PrivilegedMode(mode)
	}
	if drop {
		c.res.Dropped = append(c.res.Dropped, abs)
	} else if c.linkOK {
		lerr := os.Link(p, target)
		if lerr == nil {
			return nil
		}
		if !linkImpossible(lerr) {
			return lerr
		}
		// Another filesystem: every later link fails the same way.
		c.linkOK = !errors.Is(lerr, syscall.EXDEV)
	}
	// A file with several names is copied once; its other names link
	// to that copy, so the copy keeps the hard link.
	var key [3]uint64
	if st, ok := info.Sys().(*syscall.Stat_t); ok && st.Nlink > 1 && !mode.IsDir() {
		key = [3]uint64{uint64(st.Dev), st.Ino, 0}
		if drop {
			key[2] = 1
		}
		if first, ok := c.copies[key]; ok {
			return os.Link(first, target)
		}
	}
	if c.opts.Link && !drop {
		c.res.Copied++
	}
	if err := copyEntry(p, target, info, drop); err != nil {
		return err
	}
	if key != ([3]uint64{}) {
		c.copies[key] = target
	}
	return nil
}

func linkImpossible(err error) bool {
	return errors.Is(err, syscall.EXDEV) || errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EMLINK) || errors.Is(err, syscall.EACCES)
}

// CopyFile copies the regular file src to dst (which must not exist) with
// its content, owner (as root), mode and extended attributes; with
// dropPrivileges, without set-user-ID/set-group-ID bits and file
// capabilities.
func CopyFile(src, dst string, dropPrivileges bool) error {
	info, err := os.Lstat(src)
	if err != nil {
		return err
	}
	if !info.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file", src)
	}
	return copyEntry(src, dst, info, dropPrivileges)
}

// copyEntry copies one non-directory entry that is not a symlink: content,
// owner, mode and extended attributes for a regular file (without its
// privileges when drop), the node for the others.
func copyEntry(src, dst string, info fs.FileInfo, drop bool) error {
	mode := info.Mode()
	if !mode.IsRegular() {
		st, ok := info.Sys().(*syscall.Stat_t)
		if !ok {
			return fmt.Errorf("%s: cannot copy this kind of file", src)
		}
		if err := unix.Mknod(dst, st.Mode, int(st.Rdev)); err != nil {
			return &fs.PathError{Op: "mknod", Path: dst, Err: err}
		}
		chown(dst, info)
		return nil
	}
	in, err := os.OpenFile(src, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
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
	chown(dst, info)
	keep := fs.ModePerm | fs.ModeSticky
	if !drop {
		keep |= fs.ModeSetuid | fs.ModeSetgid
	}
	// After chown, which clears set-user-ID and set-group-ID bits.
	if err := out.Chmod(mode & keep); err != nil {
		out.Close()
		return err
	}
	if err := out.Close(); err != nil {
		return err
	}
	copyXattrs(src, dst, drop)
	return nil
}

func chown(p string, info fs.FileInfo) {
	if !IsRoot {
		return
	}
	if st, ok := info.Sys().(*syscall.Stat_t); ok {
		_ = os.Lchown(p, int(st.Uid), int(st.Gid))
	}
}

// copyXattrs copies src's extended attributes to dst (neither followed),
// but overlayfs's own and, with dropCaps, file capabilities. Attributes
// the destination refuses are left out, as cp -a does.
func copyXattrs(src, dst string, dropCaps bool) {
	size, err := unix.Llistxattr(src, nil)
	if err != nil || size == 0 {
		return
	}
	buf := make([]byte, size)
	size, err = unix.Llistxattr(src, buf)
	if err != nil {
		return
	}
	for _, name := range splitNul(buf[:size]) {
		if ReservedXattr(name) || dropCaps && name == CapabilityXattr {
			continue
		}
		n, err := unix.Lgetxattr(src, name, nil)
		if err != nil {
			continue
		}
		v := make([]byte, n)
		if n, err = unix.Lgetxattr(src, name, v); err != nil {
			continue
		}
		_ = unix.Lsetxattr(dst, name, v[:n], 0)
	}
}

func splitNul(b []byte) []string {
	var out []string
	for len(b) > 0 {
		i := 0
		for i < len(b) && b[i] != 0 {
			i++
		}
		if i > 0 {
			out = append(out, string(b[:i]))
		}
		if i < len(b) {
			i++
		}
		b = b[i:]
	}
	return out
}
