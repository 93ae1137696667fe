package fsimage

import (
	"cmp"
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
	"sync/atomic"

	"github.com/erofs/go-erofs"

	"github.com/sysext/sysext/internal/testhook"
)

// entry is one directory entry inside an image.
type entry struct {
	name string
	mode fs.FileMode // type bits only
}

// fileMeta is what a file in an image carries beyond its content.
type fileMeta struct {
	path       string      // slash-separated, relative to the root
	mode       fs.FileMode // type and permissions, setuid/setgid/sticky included
	uid, gid   uint32
	rdev       uint32 // device number (Linux new_encode_dev) of a device node
	capability []byte // the security.capability attribute, nil when none
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
	// walk calls fn for every file of the image, directories included.
	// capsRead says whether fileMeta.capability is read at all.
	walk(ctx context.Context, fn func(fileMeta) error) (capsRead bool, err error)
	close() error
}

// openTree picks the reader for the format: a Go reader where one reads the
// image, the format's own tool where it does not (see docs/building.md).
// Every Go reader is bounded in work by the image's size and stops when
// ctx is done. image is the file's path for the tools; "" means the Go
// readers only (fuzzing reads images from memory).
func openTree(ctx context.Context, src io.ReaderAt, image string, size int64, format Format) (tree, error) {
	if hook := testhook.ImageRead; hook != nil {
		src = hookedReader{ctx, src, hook}
	}
	switch format {
	case Squashfs:
		s, err := openSquashfs(src, size)
		if errors.Is(err, errUnsupported) && image != "" {
			return newUnsquashfsTree(ctx, image)
		}
		if err != nil {
			return nil, err
		}
		return &squashTree{s: s}, nil
	case EROFS:
		var sb [48]byte
		if _, err := src.ReadAt(sb[:], erofsSuperOffset); err != nil {
			return nil, fmt.Errorf("read EROFS superblock: %w", err)
		}
		if bits := sb[12]; bits >= 9 && bits <= 16 {
			if need := uint64(binary.LittleEndian.Uint32(sb[36:40])) << bits; need > uint64(size) {
				return nil, fmt.Errorf("truncated EROFS image: its superblock says %d bytes, the file has %d", need, size)
			}
		}
		r := &boundedReader{ctx: ctx, r: src, size: size, limit: erofsWorkBase + erofsWorkPerByte*size}
		var fsys fs.FS
		err := guard(ctx, func() error {
			var err error
			fsys, err = erofs.Open(erofsMetaReader{r})
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("read EROFS: %w", err)
		}
		t := &fsTree{fsys: fsys, src: r}
		if image != "" {
			t.fallback = &erofsExtract{image: image}
		}
		return t, nil
	}
	return nil, fmt.Errorf("format %q cannot be read", format)
}

// guard runs a third-party reader's call: a panic on a corrupt image
// becomes an error (untrusted input must never crash us), and when ctx is
// done guard returns at once, leaving a call that does not look at its
// reader to finish on its own (the boundedReader fails its next read).
func guard(ctx context.Context, fn func() error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() {
		defer func() {
			if r := recover(); r != nil {
				done <- &CorruptError{"EROFS", fmt.Sprintf("the reader failed: %v", r)}
			}
		}()
		done <- fn()
	}()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// The work an EROFS image may cost go-erofs, in bytes read: enough to read
// every block of a real image several times over.
const (
	erofsWorkBase    = 16 << 20
	erofsWorkPerByte = 1024
)

// boundedReader is the image as a third-party reader sees it: no read past
// the end of the image, at most limit bytes read in all, and none once ctx
// is done. Those readers check neither, and a loop in them that reads
// ends with this error.
type boundedReader struct {
	ctx   context.Context
	r     io.ReaderAt
	size  int64
	limit int64
	read  atomic.Int64
}

func (b *boundedReader) ReadAt(p []byte, off int64) (int, error) {
	if err := b.ctx.Err(); err != nil {
		return 0, err
	}
	if off < 0 || off > b.size {
		return 0, &CorruptError{"EROFS", fmt.Sprintf("a read at %d is outside its %d bytes", off, b.size)}
	}
	if b.read.Add(int64(len(p))) > b.limit {
		return 0, &CorruptError{"EROFS", fmt.Sprintf("reading it takes more than the %d bytes of reads an image of %d bytes can need", b.limit, b.size)}
	}
	if int64(len(p)) > b.size-off {
		n, err := b.r.ReadAt(p[:b.size-off], off)
		if err == nil {
			err = io.EOF
		}
		return n, err
	}
	return b.r.ReadAt(p, off)
}

// hookedReader runs a test's hook (testhook.ImageRead) before each read.
type hookedReader struct {
	ctx  context.Context
	r    io.ReaderAt
	hook func(context.Context)
}

func (h hookedReader) ReadAt(p []byte, off int64) (int, error) {
	h.hook(h.ctx)
	return h.r.ReadAt(p, off)
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

// fsTree reads an EROFS image through go-erofs's fs.FS.
type fsTree struct {
	fsys     fs.FS
	src      *boundedReader
	fallback *erofsExtract // for files the Go reader cannot decompress
}

func (t *fsTree) readDir(ctx context.Context, dir string) ([]entry, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var out []entry
	err := guard(ctx, func() error {
		if _, err := fs.Stat(t.fsys, dir); err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return fs.ErrNotExist
			}
			return err
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
	err := guard(ctx, func() error {
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

// walk lists the tree with fs.ReadDir, entering each directory (by inode
// number) once.
func (t *fsTree) walk(ctx context.Context, fn func(fileMeta) error) (bool, error) {
	err := guard(ctx, func() error {
		root, err := fs.Stat(t.fsys, ".")
		if err != nil {
			return err
		}
		rst, ok := root.Sys().(*erofs.Stat)
		if !ok {
			return fmt.Errorf("go-erofs gave no inode for the root")
		}
		seen := map[int64]bool{rst.Ino: true}
		stack := []string{"."}
		for len(stack) > 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
			dir := stack[len(stack)-1]
			stack = stack[:len(stack)-1]
			des, err := fs.ReadDir(t.fsys, dir)
			if err != nil {
				return fmt.Errorf("list %s: %w", shown("/"+dir), err)
			}
			for _, d := range des {
				name := d.Name()
				if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00") {
					return &CorruptError{"EROFS", fmt.Sprintf("directory entry %q in %s is not a file name", name, shown("/"+dir))}
				}
				p := path.Join(dir, name)
				if len(p) > sqMaxPath {
					return &CorruptError{"EROFS", fmt.Sprintf("path longer than %d bytes under %s", sqMaxPath, shown("/"+dir))}
				}
				fi, err := d.Info()
				if err != nil {
					return fmt.Errorf("%s: %w", shown("/"+p), err)
				}
				st, ok := fi.Sys().(*erofs.Stat)
				if !ok {
					return fmt.Errorf("%s: go-erofs gave no inode", shown("/"+p))
				}
				m := fileMeta{path: p, mode: st.Mode, uid: st.UID, gid: st.GID, rdev: st.Rdev}
				if v, ok := st.Xattrs[capabilityXattr]; ok {
					m.capability = []byte(v)
				}
				if err := fn(m); err != nil {
					return err
				}
				if st.Mode.IsDir() {
					if seen[st.Ino] {
						return &CorruptError{"EROFS", fmt.Sprintf("directory %s is entered twice (a loop)", shown("/"+p))}
					}
					seen[st.Ino] = true
					stack = append(stack, p)
				}
			}
		}
		return nil
	})
	return true, err
}

func (t *fsTree) close() error {
	if t.fallback != nil {
		return t.fallback.close()
	}
	return nil
}

// squashTree reads a squashfs image with our own reader (squashfs.go).
type squashTree struct{ s *squashReader }

func (t *squashTree) readDir(ctx context.Context, dir string) ([]entry, error) {
	in, err := t.s.lookup(ctx, dir)
	if err == nil && !in.isDir() {
		err = fs.ErrNotExist
	}
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fs.ErrNotExist
	}
	var ents []sqDirent
	if err == nil {
		ents, err = t.s.readDirInode(ctx, in)
	}
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", dir, err)
	}
	out := make([]entry, len(ents))
	for i, e := range ents {
		out[i] = entry{e.name, sqTypeMode(e.typ)}
	}
	return out, nil
}

func (t *squashTree) readFile(ctx context.Context, name string, limit int64) ([]byte, error) {
	in, err := t.s.lookup(ctx, name)
	if err == nil && !in.isFile() {
		err = fmt.Errorf("%s is not a regular file", name)
	}
	var data []byte
	if err == nil {
		data, err = t.s.readFileInode(ctx, in, limit)
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	return data, nil
}

func (t *squashTree) walk(ctx context.Context, fn func(fileMeta) error) (bool, error) {
	return true, t.s.walk(ctx, func(p string, in *sqInode) error {
		m := fileMeta{path: p, mode: in.mode(), uid: in.uid, gid: in.gid, rdev: in.rdev}
		if in.xattr != sqNone32 {
			v, ok, err := t.s.xattr(ctx, in.xattr, capabilityXattr)
			if err != nil {
				return fmt.Errorf("%s: %w", shown("/"+p), err)
			}
			if ok {
				m.capability = v
			}
		}
		return fn(m)
	})
}

func (t *squashTree) close() error { return nil }

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
			return nil, fmt.Errorf("read %s: %w%s", name, err, e.toolsHint())
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

// toolsHint says which erofs-utils an image compressed with more than lz4
// needs, for an fsck.erofs that failed on it (Debian 12's 1.5 reads lz4
// only).
func (e *erofsExtract) toolsHint() string {
	f, err := os.Open(e.image)
	if err != nil {
		return ""
	}
	defer f.Close()
	algs, _ := ErofsCompressors(f)
	var need []string
	for _, a := range algs {
		if a != "lz4" {
			need = append(need, a+" needs erofs-utils >= "+cmp.Or(ErofsTools(a), "?"))
		}
	}
	if len(need) == 0 {
		return ""
	}
	return " (the image is compressed with " + strings.Join(algs, ", ") + ": " + strings.Join(need, ", ") + ")"
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

// maxWalkListing bounds unsquashfs's listing of a whole image.
const maxWalkListing = 256 << 20

// walk lists the whole image with unsquashfs -lln: modes, owners and
// devices, but no xattrs, so capabilities are not read.
func (t *unsquashfsTree) walk(ctx context.Context, fn func(fileMeta) error) (bool, error) {
	out, err := runToolLimit(ctx, maxWalkListing, "unsquashfs", t.args("-lln", "-d", "", t.image)...)
	if err != nil {
		return false, err
	}
	for _, line := range strings.Split(string(out), "\n") {
		if line == "" {
			continue
		}
		m, ok := parseLLN(line)
		if !ok {
			if strings.HasPrefix(line, "d") && strings.HasSuffix(line, " ") {
				continue // the root, listed without a name
			}
			return false, fmt.Errorf("unsquashfs -lln printed a line sysext does not understand: %q", line)
		}
		if err := fn(m); err != nil {
			return false, err
		}
	}
	return false, nil
}

// parseLLN parses one line of unsquashfs -lln -d "":
// "-rwsr-xr-x 0/0 50 2026-11-22 03:08 /usr/bin/x",
// "crw-r--r-- 0/0 1,  3 2026-11-22 03:08 /usr/lib/null".
func parseLLN(line string) (fileMeta, bool) {
	var m fileMeta
	f := strings.Fields(line)
	if len(f) < 6 || len(f[0]) != 10 {
		return m, false
	}
	perm := f[0]
	switch perm[0] {
	case '-':
	case 'd':
		m.mode = fs.ModeDir
	case 'l':
		m.mode = fs.ModeSymlink
	case 'c':
		m.mode = fs.ModeDevice | fs.ModeCharDevice
	case 'b':
		m.mode = fs.ModeDevice
	case 'p':
		m.mode = fs.ModeNamedPipe
	case 's':
		m.mode = fs.ModeSocket
	default:
		return m, false
	}
	for i, c := range perm[1:] {
		bit := fs.FileMode(1) << (8 - i)
		switch c {
		case 'r', 'w', 'x':
			m.mode |= bit
		case 's', 't':
			m.mode |= bit
			fallthrough
		case 'S', 'T':
			m.mode |= [...]fs.FileMode{fs.ModeSetuid, fs.ModeSetgid, fs.ModeSticky}[i/3]
		case '-':
		default:
			return m, false
		}
	}
	uid, gid, ok := strings.Cut(f[1], "/")
	u, err1 := strconv.ParseUint(uid, 10, 32)
	g, err2 := strconv.ParseUint(gid, 10, 32)
	if !ok || err1 != nil || err2 != nil {
		return m, false
	}
	m.uid, m.gid = uint32(u), uint32(g)
	rest := f[2:]
	if m.mode&fs.ModeDevice != 0 {
		// unsquashfs 4.5 prints the stored number as rdev>>8, rdev&0xFF
		// ("4336, 44" for 240:300), which gives the number back.
		hi, err1 := strconv.ParseUint(strings.TrimSuffix(rest[0], ","), 10, 32)
		lo, err2 := strconv.ParseUint(rest[1], 10, 32)
		if err1 != nil || err2 != nil || hi > 0xFFFFFF || lo > 0xFF {
			return m, false
		}
		m.rdev = uint32(hi<<8 | lo)
		rest = rest[1:]
	}
	// size, date, time, then the path (which may hold spaces).
	if len(rest) < 4 {
		return m, false
	}
	i := strings.Index(line, " "+rest[2]+" ")
	if i < 0 {
		return m, false
	}
	p := strings.TrimPrefix(line[i+len(rest[2])+2:], "/")
	if m.mode&fs.ModeSymlink != 0 {
		if j := strings.Index(p, " -> "); j >= 0 {
			p = p[:j]
		}
	}
	if p == "" {
		return m, false
	}
	m.path = p
	return m, true
}
