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
	"github.com/sysext/sysext/internal/extract"
)

// entry is one member of a download laid out by Layout.
type entry struct {
	name     string // cleaned, relative, no leading "./"
	mode     fs.FileMode
	typ      byte // tar.TypeReg, tar.TypeSymlink, tar.TypeDir
	linkname string
	r        io.Reader // content of a plain-file download
	src      string    // or: the path of a regular file in an unpacked tree
}

// readArchive calls fn for every member of the archive at file, described
// as a tar header (zip members too), with its content for a regular file.
// What the members say is not checked here: extract.Applier does that.
func readArchive(ctx context.Context, file, format string, fn func(h *tar.Header, body io.Reader) error) error {
	f, err := os.Open(file)
	if err != nil {
		return err
	}
	defer f.Close()
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
			if err := zipMember(zf, fn); err != nil {
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
		if err := fn(h, tr); err != nil {
			return err
		}
	}
}

// zipMember describes one zip member as a tar header.
func zipMember(zf *zip.File, fn func(h *tar.Header, body io.Reader) error) error {
	h := &tar.Header{Name: zf.Name, Mode: int64(zf.Mode().Perm()), ModTime: zf.Modified}
	switch {
	case zf.Mode().IsDir():
		h.Typeflag = tar.TypeDir
		return fn(h, nil)
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
		h.Typeflag, h.Linkname = tar.TypeSymlink, string(target)
		return fn(h, nil)
	case zf.Mode().IsRegular():
		if zf.UncompressedSize64 > 1<<62 {
			return fmt.Errorf("%s: a size of %d bytes", zf.Name, zf.UncompressedSize64)
		}
		rc, err := zf.Open()
		if err != nil {
			return err
		}
		defer rc.Close()
		h.Typeflag, h.Size = tar.TypeReg, int64(zf.UncompressedSize64)
		return fn(h, rc)
	}
	return nil // devices, fifos: nothing a recipe ships
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

// unpack extracts the archive at file into dst (an empty directory) with
// the rules of container layers (extract.Applier): every name, symlink
// and hard link source is resolved inside dst, names that are absolute or
// climb out are refused, and a later member replaces an earlier one of the
// same name. Upstream archives carry content: regular files keep their
// permission bits only, directories are 0755, owners, xattrs and device
// nodes are left out. budget bounds the bytes written.
func unpack(ctx context.Context, file, format, dst string, budget *extract.Budget) error {
	a, err := extract.NewApplier(dst, extract.Options{ContentOnly: true, Budget: budget})
	if err != nil {
		return err
	}
	defer a.Close()
	if err := readArchive(ctx, file, format, a.ApplyEntry); err != nil {
		return err
	}
	return a.Finish()
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
