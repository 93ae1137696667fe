package fsimage

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"sort"
	"strconv"
	"strings"

	"github.com/diskfs/go-diskfs/backend/file"
	"github.com/diskfs/go-diskfs/filesystem/squashfs"
	"github.com/erofs/go-erofs"
)

// entry is one directory entry inside an image.
type entry struct {
	name string
	mode fs.FileMode // type bits only
}

// tree is a read-only view of the few paths we need inside an image. Paths
// are slash-separated and relative to the image's root ("usr/lib/..."), so
// nothing can name a file outside the image; symlinks are reported as such
// and never followed by the callers.
type tree interface {
	// readDir lists dir; a missing dir is fs.ErrNotExist.
	readDir(ctx context.Context, dir string) ([]entry, error)
	// readFile returns a regular file's content, refusing more than limit bytes.
	readFile(ctx context.Context, name string, limit int64) ([]byte, error)
	close() error
	// reader names what read the image, for messages and docs.
	reader() string
}

// openTree picks the reader for the format: a Go reader where one reads the
// image, the format's own tool where it does not (see docs/building.md).
func openTree(ctx context.Context, f *os.File, size int64, format Format) (tree, error) {
	switch format {
	case Squashfs:
		var sb [48]byte
		if _, err := f.ReadAt(sb[:], 0); err != nil {
			return nil, fmt.Errorf("read squashfs superblock: %w", err)
		}
		if used := binary.LittleEndian.Uint64(sb[40:48]); used > uint64(size) {
			return nil, fmt.Errorf("truncated squashfs image: its superblock says %d bytes, the file has %d", used, size)
		}
		// go-diskfs reads gzip, xz and zstd images well; it reads lz4 as
		// framed lz4 (squashfs stores raw blocks) and fails on lzo
		// fragments, so those and lzma go to unsquashfs.
		switch comp := binary.LittleEndian.Uint16(sb[20:22]); comp {
		case squashfsGzip, squashfsXZ, squashfsZstd:
		default:
			return newUnsquashfsTree(ctx, f.Name())
		}
		var sq *squashfs.FileSystem
		err := guard(func() error {
			var err error
			sq, err = squashfs.Read(file.New(f, true), size, 0, 0)
			return err
		})
		if err != nil {
			// A squashfs variant the Go reader does not know: let the
			// format's own tool decide.
			if t, terr := newUnsquashfsTree(ctx, f.Name()); terr == nil {
				return t, nil
			}
			return nil, fmt.Errorf("read squashfs: %w", err)
		}
		return &fsTree{fsys: sq, name: "go-diskfs"}, nil
	case EROFS:
		var sb [48]byte
		if _, err := f.ReadAt(sb[:], erofsSuperOffset); err != nil {
			return nil, fmt.Errorf("read EROFS superblock: %w", err)
		}
		if bits := sb[12]; bits >= 9 && bits <= 16 {
			if need := uint64(binary.LittleEndian.Uint32(sb[36:40])) << bits; need > uint64(size) {
				return nil, fmt.Errorf("truncated EROFS image: its superblock says %d bytes, the file has %d", need, size)
			}
		}
		var fsys fs.FS
		err := guard(func() error {
			var err error
			fsys, err = erofs.Open(erofsMetaReader{f})
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("read EROFS: %w", err)
		}
		return &fsTree{fsys: fsys, name: "go-erofs", fallback: &erofsExtract{image: f.Name()}}, nil
	}
	return nil, fmt.Errorf("format %q cannot be read", format)
}

// Squashfs superblock compression ids the Go reader handles.
const (
	squashfsGzip = 1
	squashfsXZ   = 4
	squashfsZstd = 6
)

// guard turns a panic of a third-party reader on a corrupt image into an
// error: untrusted input must never crash us.
func guard(fn func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("corrupt image: the reader failed: %v", r)
		}
	}()
	return fn()
}

// erofsMetaReader hides the compression feature bits of an EROFS superblock
// from go-erofs, which otherwise refuses every compressed image although
// directories and small files (extension-release, drop-ins) are stored
// uncompressed in them. Reading a compressed file still fails with
// erofs.ErrNotImplemented, and then the fallback extracts it.
type erofsMetaReader struct{ r io.ReaderAt }

const (
	erofsIncompatOffset = erofsSuperOffset + 80 // feature_incompat, u32
	erofsComprOffset    = erofsSuperOffset + 84 // available_compr_algs, u16
	// Features that change how metadata (inodes, directories, xattrs) is
	// laid out, which go-erofs handles: chunked files, device table, xattr
	// prefixes. The others only concern compressed data.
	erofsKeepIncompat = 0x4 | 0x8 | 0x40
)

func (m erofsMetaReader) ReadAt(p []byte, off int64) (int, error) {
	n, err := m.r.ReadAt(p, off)
	patch := func(at int64, width int) {
		i := at - off
		if i < 0 || i+int64(width) > int64(n) {
			return
		}
		switch width {
		case 4:
			v := binary.LittleEndian.Uint32(p[i:])
			binary.LittleEndian.PutUint32(p[i:], v&erofsKeepIncompat)
		case 2:
			binary.LittleEndian.PutUint16(p[i:], 0)
		}
	}
	patch(erofsIncompatOffset, 4)
	patch(erofsComprOffset, 2)
	return n, err
}

// fsTree reads through an fs.FS (go-diskfs, go-erofs).
type fsTree struct {
	fsys     fs.FS
	name     string
	fallback *erofsExtract // for files the Go reader cannot decompress
}

func (t *fsTree) reader() string { return t.name }

func (t *fsTree) readDir(ctx context.Context, dir string) ([]entry, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var out []entry
	err := guard(func() error {
		if _, err := fs.Stat(t.fsys, dir); err != nil {
			return fs.ErrNotExist
		}
		des, err := fs.ReadDir(t.fsys, dir)
		if err != nil {
			return err
		}
		for _, d := range des {
			out = append(out, entry{d.Name(), d.Type()})
		}
		return nil
	})
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fs.ErrNotExist
		}
		return nil, fmt.Errorf("list %s: %w", dir, err)
	}
	return out, nil
}

func (t *fsTree) readFile(ctx context.Context, name string, limit int64) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var data []byte
	err := guard(func() error {
		f, err := t.fsys.Open(name)
		if err != nil {
			return err
		}
		defer f.Close()
		st, err := f.Stat()
		if err != nil {
			return err
		}
		if !st.Mode().IsRegular() {
			return fmt.Errorf("%s is not a regular file", name)
		}
		if st.Size() > limit {
			return fmt.Errorf("%s is %d bytes, more than the %d allowed", name, st.Size(), limit)
		}
		data, err = io.ReadAll(io.LimitReader(f, limit+1))
		if err == nil && int64(len(data)) > limit {
			err = fmt.Errorf("%s is more than the %d bytes allowed", name, limit)
		}
		return err
	})
	if err != nil && t.fallback != nil && errors.Is(err, erofs.ErrNotImplemented) {
		return t.fallback.readFile(ctx, name, limit)
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	return data, nil
}

func (t *fsTree) close() error {
	if t.fallback != nil {
		return t.fallback.close()
	}
	return nil
}

// erofsExtract reads a compressed EROFS file: from its one lz4 cluster
// when it has one (readCompressedExtent), else the only way erofs-utils
// 1.5 offers, fsck.erofs --extract of the whole image into a private temp
// directory, done once. Both are rare: metadata files under 4 KiB are
// stored plain even in compressed images.
type erofsExtract struct {
	image string
	dir   string
	root  *os.Root
}

func (e *erofsExtract) readFile(ctx context.Context, name string, limit int64) ([]byte, error) {
	if data, ok := readCompressedExtent(ctx, e.image, name, limit); ok {
		return data, nil
	}
	if e.root == nil {
		if _, err := lookTool("fsck.erofs"); err != nil {
			return nil, fmt.Errorf("read %s: it is compressed and %w", name, err)
		}
		dir, err := os.MkdirTemp("", ".#sysext-erofs-")
		if err != nil {
			return nil, err
		}
		e.dir = dir
		out := dir + "/root"
		if _, err := runTool(ctx, "fsck.erofs", "--extract="+out, "--no-preserve", e.image); err != nil {
			return nil, fmt.Errorf("read %s: %w", name, err)
		}
		// os.Root keeps symlinks in the extracted tree from reaching
		// outside it.
		root, err := os.OpenRoot(out)
		if err != nil {
			return nil, err
		}
		e.root = root
	}
	f, err := e.root.Open(name)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() || st.Size() > limit {
		return nil, fmt.Errorf("read %s: not a regular file of at most %d bytes", name, limit)
	}
	return io.ReadAll(io.LimitReader(f, limit))
}

func (e *erofsExtract) close() error {
	if e.root != nil {
		e.root.Close()
	}
	if e.dir != "" {
		return os.RemoveAll(e.dir)
	}
	return nil
}

// unsquashfsTree reads a squashfs image with unsquashfs: one listing of
// the paths we need, and -cat for each file (unsquashfs does not follow a
// symlink out of the image).
type unsquashfsTree struct {
	image   string
	offset  int64                  // where the filesystem starts in image (a disk image's partition)
	entries map[string]fs.FileMode // "usr/lib/..." -> type bits
}

// args prefixes unsquashfs arguments with the filesystem's offset.
func (t *unsquashfsTree) args(a ...string) []string {
	if t.offset > 0 {
		return append([]string{"-o", strconv.FormatInt(t.offset, 10)}, a...)
	}
	return a
}

func (t *unsquashfsTree) reader() string { return "unsquashfs" }

// maxListing bounds unsquashfs's listing of the directories we look into.
const maxListing = 16 << 20

// listedDirs are the only directories sysext looks into.
var listedDirs = []string{"usr/lib/extension-release.d", "usr/lib/systemd/system"}

func newUnsquashfsTree(ctx context.Context, image string) (*unsquashfsTree, error) {
	return newUnsquashfsTreeAt(ctx, image, 0)
}

func newUnsquashfsTreeAt(ctx context.Context, image string, offset int64) (*unsquashfsTree, error) {
	if _, err := lookTool("unsquashfs"); err != nil {
		return nil, err
	}
	t := &unsquashfsTree{image: image, offset: offset, entries: map[string]fs.FileMode{}}
	if err := t.list(ctx, listedDirs...); err != nil {
		return nil, err
	}
	return t, nil
}

// list adds the entries of dirs (and of their subdirectories) to t.
func (t *unsquashfsTree) list(ctx context.Context, dirs ...string) error {
	args := t.args(append([]string{"-lls", "-d", "", t.image}, dirs...)...)
	// Bounded: the listing of an untrusted image's unit directory.
	out, err := runToolLimit(ctx, maxListing, "unsquashfs", args...)
	if err != nil {
		return err
	}
	for _, line := range strings.Split(string(out), "\n") {
		p, mode, ok := parseLLS(line)
		if ok {
			t.entries[p] = mode
		}
	}
	return nil
}

// parseLLS parses one line of unsquashfs -lls -d "":
// "-rw-r--r-- root/root 50 2026-11-22 03:08 /usr/lib/x".
func parseLLS(line string) (string, fs.FileMode, bool) {
	if line == "" {
		return "", 0, false
	}
	var mode fs.FileMode
	switch line[0] {
	case '-':
	case 'd':
		mode = fs.ModeDir
	case 'l':
		mode = fs.ModeSymlink
	default:
		return "", 0, false // devices, fifos, sockets: never needed
	}
	rest := line
	for i := 0; i < 5; i++ {
		rest = strings.TrimLeft(rest, " ")
		j := strings.IndexByte(rest, ' ')
		if j < 0 {
			return "", 0, false
		}
		rest = rest[j:]
	}
	p := strings.TrimPrefix(strings.TrimLeft(rest, " "), "/")
	if mode == fs.ModeSymlink {
		if i := strings.Index(p, " -> "); i >= 0 {
			p = p[:i]
		}
	}
	if p == "" {
		return "", 0, false
	}
	return p, mode, true
}

func (t *unsquashfsTree) readDir(ctx context.Context, dir string) ([]entry, error) {
	if m, ok := t.entries[dir]; !ok || m != fs.ModeDir {
		return nil, fs.ErrNotExist
	}
	var out []entry
	for p, m := range t.entries {
		if path.Dir(p) == dir {
			out = append(out, entry{path.Base(p), m})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out, nil
}

func (t *unsquashfsTree) readFile(ctx context.Context, name string, limit int64) ([]byte, error) {
	if m, ok := t.entries[name]; !ok || m != 0 {
		return nil, fmt.Errorf("read %s: not a regular file", name)
	}
	out, err := runToolLimit(ctx, limit, "unsquashfs", t.args("-cat", t.image, name)...)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	return out, nil
}

func (t *unsquashfsTree) close() error { return nil }
