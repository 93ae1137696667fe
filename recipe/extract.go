package recipe

import (
	"archive/tar"
	"archive/zip"
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"

	"github.com/sysext/sysext/internal/ctxio"
)

// entry is one member of a downloaded archive.
type entry struct {
	name     string // cleaned, relative, no leading "./"
	mode     fs.FileMode
	typ      byte // tar.TypeReg, tar.TypeSymlink, tar.TypeLink, tar.TypeDir
	linkname string
	r        io.Reader // content of a regular file from an archive
	src      string    // or: the path of a regular file in an unpacked tree
}

// walkArchive calls fn for every member of the archive at file. A plain
// file ("file" format) is one member with an empty name.
func walkArchive(ctx context.Context, file, format string, fn func(e *entry) error) error {
	f, err := os.Open(file)
	if err != nil {
		return err
	}
	defer f.Close()
	if format == "file" {
		return fn(&entry{name: "", mode: 0o755, typ: tar.TypeReg, r: ctxio.Reader(ctx, f)})
	}
	if format == "zip" {
		st, err := f.Stat()
		if err != nil {
			return err
		}
		zr, err := zip.NewReader(f, st.Size())
		if err != nil {
			return fmt.Errorf("not a zip archive: %w", err)
		}
		for _, zf := range zr.File {
			if err := ctx.Err(); err != nil {
				return err
			}
			name, ok := cleanMember(zf.Name)
			if !ok {
				continue
			}
			e := &entry{name: name, mode: zf.Mode().Perm()}
			switch {
			case zf.Mode().IsDir():
				e.typ = tar.TypeDir
			case zf.Mode()&fs.ModeSymlink != 0:
				rc, err := zf.Open()
				if err != nil {
					return err
				}
				target, err := io.ReadAll(io.LimitReader(rc, 4096))
				rc.Close()
				if err != nil {
					return err
				}
				e.typ, e.linkname = tar.TypeSymlink, string(target)
			case zf.Mode().IsRegular():
				rc, err := zf.Open()
				if err != nil {
					return err
				}
				e.typ, e.r = tar.TypeReg, rc
				err = fn(e)
				rc.Close()
				if err != nil {
					return err
				}
				continue
			default:
				continue
			}
			if err := fn(e); err != nil {
				return err
			}
		}
		return nil
	}
	var r io.Reader = bufio.NewReaderSize(ctxio.Reader(ctx, f), 256<<10)
	switch format {
	case "tar.gz":
		gz, err := gzip.NewReader(r)
		if err != nil {
			return fmt.Errorf("not a gzip file: %w", err)
		}
		defer gz.Close()
		r = gz
	case "tar.xz":
		xr, err := xz.NewReader(r)
		if err != nil {
			return fmt.Errorf("not an xz file: %w", err)
		}
		r = xr
	case "tar.zst":
		zr, err := zstd.NewReader(r)
		if err != nil {
			return fmt.Errorf("not a zstd file: %w", err)
		}
		defer zr.Close()
		r = zr
	case "tar":
	default:
		return fmt.Errorf("unknown archive format %q", format)
	}
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("reading the archive: %w", err)
		}
		name, ok := cleanMember(h.Name)
		if !ok {
			continue
		}
		e := &entry{name: name, mode: fs.FileMode(h.Mode).Perm(), linkname: h.Linkname}
		switch h.Typeflag {
		case tar.TypeReg, tar.TypeRegA:
			e.typ, e.r = tar.TypeReg, tr
		case tar.TypeSymlink:
			e.typ = tar.TypeSymlink
		case tar.TypeLink:
			e.typ = tar.TypeLink
			if e.linkname, ok = cleanMember(h.Linkname); !ok {
				continue
			}
		case tar.TypeDir:
			e.typ = tar.TypeDir
		default:
			continue // devices, fifos: nothing a recipe ships
		}
		if err := fn(e); err != nil {
			return err
		}
	}
}

// cleanMember normalises an archive member name; members that are absolute
// or climb out of the archive are never matched.
func cleanMember(name string) (string, bool) {
	name = strings.TrimPrefix(name, "./")
	if name == "" || strings.HasPrefix(name, "/") {
		return "", false
	}
	c := path.Clean(name)
	if c == "." || c == ".." || strings.HasPrefix(c, "../") {
		return "", false
	}
	return c, true
}

// tree writes into a staged directory; every path it is given is a clean
// absolute path under /usr (the recipe was validated), and it never follows
// a symlink on the way to a file it writes.
type tree struct {
	root    string
	written map[string]string // image path -> who placed it, for clear conflicts
}

func (t *tree) host(p string) string { return filepath.Join(t.root, filepath.FromSlash(p)) }

// mkdirs creates the parents of image path p as real directories.
func (t *tree) mkdirs(p string) error { return mkdirsUnder(t.root, p) }

// mkdirsUnder creates the parent directories of the slash path p inside
// root, refusing to go through anything that is not a real directory (a
// symlink from an archive could point anywhere).
func mkdirsUnder(root, p string) error {
	dir := path.Dir(strings.TrimPrefix(p, "/"))
	if dir == "." {
		return nil
	}
	cur := root
	for _, c := range strings.Split(dir, "/") {
		cur = filepath.Join(cur, c)
		st, err := os.Lstat(cur)
		switch {
		case err == nil && st.IsDir():
			continue
		case err == nil:
			return fmt.Errorf("%s: a parent is not a directory (a link from the archive?)", p)
		case errors.Is(err, os.ErrNotExist):
			if err := os.Mkdir(cur, 0o755); err != nil {
				return err
			}
		default:
			return err
		}
	}
	return nil
}

func (t *tree) claim(p, who string) error {
	if !strings.HasPrefix(p, "/usr/") || path.Clean(p) != p {
		return fmt.Errorf("%s: %q leaves /usr", who, p)
	}
	if prev, ok := t.written[p]; ok {
		return fmt.Errorf("%s: %s is already placed by %s", who, p, prev)
	}
	t.written[p] = who
	return t.mkdirs(p)
}

func (t *tree) writeFile(p, who string, r io.Reader, mode fs.FileMode) error {
	if err := t.claim(p, who); err != nil {
		return err
	}
	if err := createFile(t.host(p), r, mode); err != nil {
		return fmt.Errorf("%s: writing %s: %w", who, p, err)
	}
	return nil
}

// placeFile puts the unpacked file src at p: a hard link when the mode is
// already right (no copy; nothing ever writes to either name), else a copy.
func (t *tree) placeFile(p, who, src string, mode fs.FileMode) error {
	if err := t.claim(p, who); err != nil {
		return err
	}
	if st, err := os.Lstat(src); err == nil && st.Mode().IsRegular() && st.Mode().Perm() == mode.Perm() {
		if err := os.Link(src, t.host(p)); err == nil {
			return nil
		}
		// Another filesystem, or links not allowed: copy.
	}
	f, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("%s: %w", who, err)
	}
	defer f.Close()
	if err := createFile(t.host(p), f, mode); err != nil {
		return fmt.Errorf("%s: writing %s: %w", who, p, err)
	}
	return nil
}

// createFile writes a new file (never through an existing name or link).
func createFile(name string, r io.Reader, mode fs.FileMode) error {
	f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode.Perm())
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, r); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	// O_CREAT honours the umask; the recipe's mode is what ships.
	return os.Chmod(name, mode.Perm())
}

// unpack extracts every member of an archive into dst (an empty
// directory). Members that climb out are skipped, no member is written
// through a symlink, and the first of two members with one name wins.
func unpack(ctx context.Context, file, format, dst string) error {
	return walkArchive(ctx, file, format, func(e *entry) error {
		p := filepath.Join(dst, filepath.FromSlash(e.name))
		if err := mkdirsUnder(dst, e.name); err != nil {
			return err
		}
		var err error
		switch e.typ {
		case tar.TypeDir:
			if err = os.Mkdir(p, 0o755); errors.Is(err, os.ErrExist) {
				if st, serr := os.Lstat(p); serr == nil && st.IsDir() {
					err = nil
				}
			}
		case tar.TypeReg:
			mode := e.mode
			if mode == 0 {
				mode = 0o644
			}
			err = createFile(p, e.r, mode)
		case tar.TypeSymlink:
			err = os.Symlink(e.linkname, p)
		case tar.TypeLink:
			src := filepath.Join(dst, filepath.FromSlash(e.linkname))
			if st, serr := os.Lstat(src); serr == nil && st.Mode().IsRegular() {
				err = os.Link(src, p)
			}
		}
		if errors.Is(err, os.ErrExist) {
			return nil
		}
		return err
	})
}

// walkTree calls fn for everything in an unpacked tree, in lexical order,
// as walkArchive would for the archive it came from.
func walkTree(ctx context.Context, root string, fn func(e *entry) error) error {
	return filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil || rel == "." {
			return err
		}
		e := &entry{name: filepath.ToSlash(rel)}
		switch {
		case d.IsDir():
			e.typ = tar.TypeDir
		case d.Type()&fs.ModeSymlink != 0:
			if e.linkname, err = os.Readlink(p); err != nil {
				return err
			}
			e.typ = tar.TypeSymlink
		case d.Type().IsRegular():
			info, err := d.Info()
			if err != nil {
				return err
			}
			e.typ, e.src, e.mode = tar.TypeReg, p, info.Mode().Perm()
		default:
			return nil
		}
		return fn(e)
	})
}

func (t *tree) symlink(p, who, target string) error {
	if err := t.claim(p, who); err != nil {
		return err
	}
	return os.Symlink(target, t.host(p))
}

func (t *tree) link(p, who, existing string) error {
	if err := t.claim(p, who); err != nil {
		return err
	}
	return os.Link(t.host(existing), t.host(p))
}
