package fsimage

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"math/bits"
	"strings"
	"unicode/utf8"

	"github.com/anchore/go-lzo"
	"github.com/klauspost/compress/zlib"
	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
	"github.com/sysext/sysext/extension"
	"github.com/ulikunitz/xz"
	"github.com/ulikunitz/xz/lzma"
)

// Our own squashfs 4.0 reader, for what sysext needs: list a directory,
// read a small file, walk the tree for modes, owners, devices and
// capabilities. go-diskfs 1.9.4 looped for minutes on a 2,988-byte crafted
// image (a directory read past the end of the image, one empty block at a
// time) and drops the setuid/setgid bits from every mode.
//
// Every loop advances through the image or is bounded by a count the image
// cannot inflate, every read stays inside the image's bytes_used, and all
// work (bytes decompressed and metadata bytes parsed) is charged to a
// budget proportional to the image's size (sqWorkBase + sqWorkPerByte per
// byte): a crafted image is refused in time linear in its size, a real one
// needs a small fraction of it. The context is checked at every metadata
// block, so a signal stops a read within one block's work.

// Squashfs superblock compression ids.
const (
	squashfsGzip = 1
	squashfsLZMA = 2
	squashfsLZO  = 3
	squashfsXZ   = 4
	squashfsLZ4  = 5
	squashfsZstd = 6
)

// Inode types (directory entries use the basic ones).
const (
	sqDir      = 1
	sqFile     = 2
	sqSymlink  = 3
	sqBlock    = 4
	sqChar     = 5
	sqFifo     = 6
	sqSocket   = 7
	sqLDir     = 8
	sqLFile    = 9
	sqLSymlink = 10
	sqLBlock   = 11
	sqLChar    = 12
	sqLFifo    = 13
	sqLSocket  = 14
)

const (
	sqSuperSize     = 96
	sqMetaSize      = 8192 // uncompressed size of a full metadata block
	sqNone32        = 0xFFFFFFFF
	sqNone64        = 0xFFFFFFFFFFFFFFFF
	sqFlagNoXattrs  = 0x0200
	sqFlagCompOpts  = 0x0400
	sqDataUncomp    = 1 << 24
	sqMaxXattrs     = 1024    // per inode; Linux allows 64 KiB of names in all
	sqMaxXattrValue = 1 << 16 // XATTR_SIZE_MAX
	sqMaxPath       = 4096    // PATH_MAX: longer paths cannot be merged anyway
	sqMaxCache      = 2048    // metadata blocks kept (16 MiB)
	sqMaxMetaRead   = 4 << 20 // one read of a table: a name, a value, a block list
	sqWorkBase      = 16 << 20
	sqWorkPerByte   = 256
)

// errUnsupported marks a valid image the Go reader does not decode (xz
// with a BCJ filter): unsquashfs reads those.
var errUnsupported = errors.New("squashfs variant not read in Go")

func corrupt(format string, args ...any) error {
	return &CorruptError{"squashfs", fmt.Sprintf(format, args...)}
}

type sqSuper struct {
	inodes      uint32
	blockSize   uint32
	fragments   uint32
	compression uint16
	blockLog    uint16
	flags       uint16
	ids         uint16
	rootInode   uint64
	bytesUsed   uint64
	idTable     uint64
	xattrTable  uint64
	inodeTable  uint64
	dirTable    uint64
	fragTable   uint64
}

// squashReader reads one squashfs image. Not safe for concurrent use.
type squashReader struct {
	r      io.ReaderAt
	sb     sqSuper
	size   int64 // bytes_used: nothing is read beyond it
	decode func(src []byte, max int) ([]byte, error)
	cache  map[int64]*sqMetaBlock
	ids    []uint32
	work   int64
	limit  int64

	xattrKV  int64 // start of the xattr key/value metadata
	xattrIDs uint32
}

type sqMetaBlock struct {
	data []byte
	next int64 // where the next block starts
}

// sqPos is a position in a metadata table: the block's absolute offset and
// an offset into its uncompressed bytes.
type sqPos struct {
	block int64
	off   int
}

// openSquashfs checks the superblock against the file's size and prepares
// the decompressor. It reads nothing else.
func openSquashfs(r io.ReaderAt, fileSize int64) (*squashReader, error) {
	var b [sqSuperSize]byte
	if n, err := r.ReadAt(b[:], 0); n != len(b) {
		return nil, corrupt("superblock cut short (%v)", err)
	}
	le := binary.LittleEndian
	sb := sqSuper{
		inodes: le.Uint32(b[4:]), blockSize: le.Uint32(b[12:]), fragments: le.Uint32(b[16:]),
		compression: le.Uint16(b[20:]), blockLog: le.Uint16(b[22:]), flags: le.Uint16(b[24:]),
		ids: le.Uint16(b[26:]), rootInode: le.Uint64(b[32:]), bytesUsed: le.Uint64(b[40:]),
		idTable: le.Uint64(b[48:]), xattrTable: le.Uint64(b[56:]), inodeTable: le.Uint64(b[64:]),
		dirTable: le.Uint64(b[72:]), fragTable: le.Uint64(b[80:]),
	}
	if major, minor := le.Uint16(b[28:]), le.Uint16(b[30:]); major != 4 || minor != 0 {
		return nil, corrupt("version %d.%d (sysext reads squashfs 4.0)", major, minor)
	}
	if sb.bytesUsed > uint64(fileSize) {
		return nil, fmt.Errorf("truncated squashfs image: its superblock says %d bytes, the file has %d", sb.bytesUsed, fileSize)
	}
	if sb.blockSize < 4096 || sb.blockSize > 1<<20 || bits.OnesCount32(sb.blockSize) != 1 || 1<<sb.blockLog != sb.blockSize {
		return nil, corrupt("block size %d (log %d)", sb.blockSize, sb.blockLog)
	}
	used := sb.bytesUsed
	if sb.inodeTable >= used || sb.dirTable >= used || sb.inodeTable >= sb.dirTable || sb.idTable >= used {
		return nil, corrupt("tables outside the image (inodes at %d, directories at %d, ids at %d, size %d)", sb.inodeTable, sb.dirTable, sb.idTable, used)
	}
	if sb.ids == 0 {
		return nil, corrupt("no uid/gid table")
	}
	s := &squashReader{
		r: r, sb: sb, size: int64(used),
		cache: map[int64]*sqMetaBlock{},
		limit: sqWorkBase + sqWorkPerByte*int64(used),
	}
	switch sb.compression {
	case squashfsGzip:
		s.decode = inflate
	case squashfsXZ:
		s.decode = func(src []byte, max int) ([]byte, error) { return unxz(src, max, int(sb.blockSize)) }
		if sb.flags&sqFlagCompOpts != 0 {
			// The xz options name the branch filters (BCJ) mksquashfs
			// may have used on any block; the Go decoder has none.
			opts, _, err := s.readMeta(context.Background(), sqPos{sqSuperSize, 0}, 8)
			if err != nil {
				return nil, fmt.Errorf("xz options: %w", err)
			}
			if filters := binary.LittleEndian.Uint32(opts[4:]); filters != 0 {
				return nil, fmt.Errorf("%w: xz with branch filters %#x", errUnsupported, filters)
			}
		}
	case squashfsLZ4:
		s.decode = unlz4
	case squashfsZstd:
		d, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1),
			zstd.WithDecoderMaxMemory(uint64(sb.blockSize)), zstd.WithDecoderMaxWindow(8<<20))
		if err != nil {
			return nil, err
		}
		s.decode = func(src []byte, max int) ([]byte, error) { return unzstd(d, src, max) }
	case squashfsLZO:
		s.decode = unlzo
	case squashfsLZMA:
		s.decode = func(src []byte, max int) ([]byte, error) { return unlzma(src, max, int(sb.blockSize)) }
	default:
		return nil, corrupt("unknown compression %d", sb.compression)
	}
	return s, nil
}

// charge adds n units of work and fails once the image's budget is spent.
func (s *squashReader) charge(n int) error {
	s.work += int64(n)
	if s.work > s.limit {
		return corrupt("reading it takes more than the %d units of work an image of %d bytes can need", s.limit, s.size)
	}
	return nil
}

// readRaw reads exactly len(p) bytes at off, all inside the image.
func (s *squashReader) readRaw(p []byte, off int64, what string) error {
	if off < 0 || off > s.size || int64(len(p)) > s.size-off {
		return corrupt("%s at %d (+%d bytes) is outside the image's %d bytes", what, off, len(p), s.size)
	}
	if n, err := s.r.ReadAt(p, off); n != len(p) {
		return fmt.Errorf("read %s at %d: %w", what, off, err)
	}
	return nil
}

// metaBlock reads (or finds cached) the metadata block at off.
func (s *squashReader) metaBlock(ctx context.Context, off int64) (*sqMetaBlock, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if b, ok := s.cache[off]; ok {
		return b, nil
	}
	var h [2]byte
	if err := s.readRaw(h[:], off, "metadata block header"); err != nil {
		return nil, err
	}
	hdr := binary.LittleEndian.Uint16(h[:])
	n := int(hdr & 0x7FFF)
	if n == 0 || n > sqMetaSize {
		return nil, corrupt("metadata block at %d has size %d", off, n)
	}
	raw := make([]byte, n)
	if err := s.readRaw(raw, off+2, "metadata block"); err != nil {
		return nil, err
	}
	data := raw
	if hdr&0x8000 == 0 {
		var err error
		if data, err = s.decode(raw, sqMetaSize); err != nil {
			if errors.Is(err, errUnsupported) {
				return nil, err
			}
			return nil, corrupt("metadata block at %d: %v", off, err)
		}
	}
	if len(data) == 0 {
		return nil, corrupt("metadata block at %d is empty", off)
	}
	if err := s.charge(len(raw) + len(data)); err != nil {
		return nil, err
	}
	if len(s.cache) >= sqMaxCache {
		clear(s.cache)
	}
	b := &sqMetaBlock{data: data, next: off + 2 + int64(n)}
	s.cache[off] = b
	return b, nil
}

// readMeta returns n bytes of a metadata table from pos, and the position
// after them. It always advances: each block is at least 3 bytes long and
// holds at least one byte, so n bytes take at most n blocks, all inside the
// image.
func (s *squashReader) readMeta(ctx context.Context, pos sqPos, n int) ([]byte, sqPos, error) {
	if n < 0 || n > sqMaxMetaRead {
		return nil, pos, corrupt("metadata read of %d bytes", n)
	}
	if err := s.charge(n); err != nil {
		return nil, pos, err
	}
	out := make([]byte, 0, n)
	for {
		b, err := s.metaBlock(ctx, pos.block)
		if err != nil {
			return nil, pos, err
		}
		if pos.off < 0 || pos.off > len(b.data) {
			return nil, pos, corrupt("offset %d into the %d-byte metadata block at %d", pos.off, len(b.data), pos.block)
		}
		take := min(n-len(out), len(b.data)-pos.off)
		out = append(out, b.data[pos.off:pos.off+take]...)
		pos.off += take
		if len(out) == n {
			return out, pos, nil
		}
		pos = sqPos{b.next, 0}
	}
}

// ref turns a 48-bit metadata reference (block offset << 16 | offset) into
// a position in the table starting at base.
func (s *squashReader) ref(base uint64, ref uint64) (sqPos, error) {
	blk, off := ref>>16, int(ref&0xFFFF)
	if blk >= uint64(s.size) || base+blk >= uint64(s.size) || off >= sqMetaSize {
		return sqPos{}, corrupt("metadata reference %#x points outside the image", ref)
	}
	return sqPos{int64(base + blk), off}, nil
}

// tableEntry reads entry i (of size bytes each) of a table reached through
// the lookup array at lookup: one u64 pointer per metadata block.
func (s *squashReader) tableEntry(ctx context.Context, lookup uint64, i, size int) ([]byte, error) {
	perBlock := sqMetaSize / size
	var p [8]byte
	if err := s.readRaw(p[:], int64(lookup)+8*int64(i/perBlock), "lookup table"); err != nil {
		return nil, err
	}
	b, _, err := s.readMeta(ctx, sqPos{int64(binary.LittleEndian.Uint64(p[:])), (i % perBlock) * size}, size)
	return b, err
}

// id returns entry i of the uid/gid table.
func (s *squashReader) id(ctx context.Context, i uint16) (uint32, error) {
	if i >= s.sb.ids {
		return 0, corrupt("uid/gid index %d of %d", i, s.sb.ids)
	}
	if s.ids == nil {
		s.ids = make([]uint32, s.sb.ids)
		for j := range s.ids {
			b, err := s.tableEntry(ctx, s.sb.idTable, j, 4)
			if err != nil {
				s.ids = nil
				return 0, fmt.Errorf("uid/gid table: %w", err)
			}
			s.ids[j] = binary.LittleEndian.Uint32(b)
		}
	}
	return s.ids[i], nil
}

// sqInode is what sysext uses of an inode.
type sqInode struct {
	typ      uint16
	perm     uint16 // the low 12 bits of st_mode: setuid, setgid, sticky, rwx
	uid, gid uint32
	xattr    uint32
	rdev     uint32
	nlink    uint32
	// directories
	dirStart uint32
	dirOff   uint16
	dirSize  uint32
	// regular files
	size        uint64
	blocksStart uint64
	frag        uint32
	fragOff     uint32
	blockList   sqPos
}

func (i *sqInode) isDir() bool  { return i.typ == sqDir || i.typ == sqLDir }
func (i *sqInode) isFile() bool { return i.typ == sqFile || i.typ == sqLFile }

// mode is the inode's type and permissions as an fs.FileMode, setuid,
// setgid and sticky included.
func (i *sqInode) mode() fs.FileMode {
	m := fs.FileMode(i.perm & 0o777)
	if i.perm&0o4000 != 0 {
		m |= fs.ModeSetuid
	}
	if i.perm&0o2000 != 0 {
		m |= fs.ModeSetgid
	}
	if i.perm&0o1000 != 0 {
		m |= fs.ModeSticky
	}
	return m | sqTypeMode(i.typ)
}

// sqTypeMode maps an inode or directory entry type to fs.FileMode type bits.
func sqTypeMode(t uint16) fs.FileMode {
	switch t {
	case sqDir, sqLDir:
		return fs.ModeDir
	case sqSymlink, sqLSymlink:
		return fs.ModeSymlink
	case sqBlock, sqLBlock:
		return fs.ModeDevice
	case sqChar, sqLChar:
		return fs.ModeDevice | fs.ModeCharDevice
	case sqFifo, sqLFifo:
		return fs.ModeNamedPipe
	case sqSocket, sqLSocket:
		return fs.ModeSocket
	}
	return 0
}

// inode reads the inode at ref.
func (s *squashReader) inode(ctx context.Context, ref uint64) (*sqInode, error) {
	pos, err := s.ref(s.sb.inodeTable, ref)
	if err != nil {
		return nil, err
	}
	h, pos, err := s.readMeta(ctx, pos, 16)
	if err != nil {
		return nil, err
	}
	le := binary.LittleEndian
	in := &sqInode{typ: le.Uint16(h), perm: le.Uint16(h[2:]) & 0o7777, xattr: sqNone32}
	if in.uid, err = s.id(ctx, le.Uint16(h[4:])); err != nil {
		return nil, err
	}
	if in.gid, err = s.id(ctx, le.Uint16(h[6:])); err != nil {
		return nil, err
	}
	body := func(n int) []byte {
		if err != nil {
			return nil
		}
		var b []byte
		b, pos, err = s.readMeta(ctx, pos, n)
		return b
	}
	switch in.typ {
	case sqDir:
		if b := body(16); b != nil {
			in.dirStart, in.nlink, in.dirSize, in.dirOff = le.Uint32(b), le.Uint32(b[4:]), uint32(le.Uint16(b[8:])), le.Uint16(b[10:])
		}
	case sqLDir:
		if b := body(24); b != nil {
			in.nlink, in.dirSize, in.dirStart, in.dirOff, in.xattr = le.Uint32(b), le.Uint32(b[4:]), le.Uint32(b[8:]), le.Uint16(b[18:]), le.Uint32(b[20:])
		}
	case sqFile:
		if b := body(16); b != nil {
			in.blocksStart, in.frag, in.fragOff, in.size, in.nlink = uint64(le.Uint32(b)), le.Uint32(b[4:]), le.Uint32(b[8:]), uint64(le.Uint32(b[12:])), 1
		}
	case sqLFile:
		if b := body(40); b != nil {
			in.blocksStart, in.size, in.nlink, in.frag, in.fragOff, in.xattr = le.Uint64(b), le.Uint64(b[8:]), le.Uint32(b[24:]), le.Uint32(b[28:]), le.Uint32(b[32:]), le.Uint32(b[36:])
		}
	case sqSymlink, sqLSymlink:
		if b := body(8); b != nil {
			in.nlink, in.size = le.Uint32(b), uint64(le.Uint32(b[4:]))
			if in.size > sqMaxPath {
				return nil, corrupt("symlink target of %d bytes", in.size)
			}
			body(int(in.size))
			if in.typ == sqLSymlink {
				if b := body(4); b != nil {
					in.xattr = le.Uint32(b)
				}
			}
		}
	case sqBlock, sqChar:
		if b := body(8); b != nil {
			in.nlink, in.rdev = le.Uint32(b), le.Uint32(b[4:])
		}
	case sqLBlock, sqLChar:
		if b := body(12); b != nil {
			in.nlink, in.rdev, in.xattr = le.Uint32(b), le.Uint32(b[4:]), le.Uint32(b[8:])
		}
	case sqFifo, sqSocket:
		if b := body(4); b != nil {
			in.nlink = le.Uint32(b)
		}
	case sqLFifo, sqLSocket:
		if b := body(8); b != nil {
			in.nlink, in.xattr = le.Uint32(b), le.Uint32(b[4:])
		}
	default:
		return nil, corrupt("inode type %d", in.typ)
	}
	if err != nil {
		return nil, err
	}
	in.blockList = pos
	return in, nil
}

// sqDirent is one entry of a directory listing.
type sqDirent struct {
	name string
	typ  uint16
	ref  uint64 // the inode's reference
}

// readDirInode lists a directory inode.
func (s *squashReader) readDirInode(ctx context.Context, in *sqInode) ([]sqDirent, error) {
	if !in.isDir() {
		return nil, corrupt("not a directory")
	}
	// The listing is dirSize-3 bytes ("." and ".." count as 3).
	if in.dirSize < 3 {
		return nil, nil
	}
	left := int64(in.dirSize) - 3
	pos, err := s.ref(s.sb.dirTable, uint64(in.dirStart)<<16|uint64(in.dirOff))
	if err != nil {
		return nil, err
	}
	le := binary.LittleEndian
	var out []sqDirent
	for left > 0 {
		if left < 12 {
			return nil, corrupt("directory listing ends inside a header")
		}
		h, p, err := s.readMeta(ctx, pos, 12)
		if err != nil {
			return nil, err
		}
		pos, left = p, left-12
		count, start := le.Uint32(h)+1, le.Uint32(h[4:])
		if count > 256 {
			return nil, corrupt("directory header with %d entries", count)
		}
		for range count {
			if left < 8 {
				return nil, corrupt("directory listing ends inside an entry")
			}
			e, p, err := s.readMeta(ctx, pos, 8)
			if err != nil {
				return nil, err
			}
			nameLen := int(le.Uint16(e[6:])) + 1
			if int64(8+nameLen) > left {
				return nil, corrupt("directory entry name runs past the listing")
			}
			name, p, err := s.readMeta(ctx, p, nameLen)
			if err != nil {
				return nil, err
			}
			pos, left = p, left-int64(8+nameLen)
			n := string(name)
			if n == "." || n == ".." || bytes.ContainsAny(name, "/\x00") {
				return nil, corrupt("directory entry %q is not a file name", n)
			}
			typ := le.Uint16(e[4:])
			if typ < sqDir || typ > sqSocket {
				return nil, corrupt("directory entry %q has type %d", n, typ)
			}
			out = append(out, sqDirent{name: n, typ: typ, ref: uint64(start)<<16 | uint64(le.Uint16(e))})
		}
	}
	return out, nil
}

// lookup finds the inode at a slash-separated path relative to the root,
// never following a symlink.
func (s *squashReader) lookup(ctx context.Context, name string) (*sqInode, error) {
	in, err := s.inode(ctx, s.sb.rootInode)
	if err != nil {
		return nil, err
	}
	if !in.isDir() {
		return nil, corrupt("the root is not a directory")
	}
	for _, part := range splitPath(name) {
		if !in.isDir() {
			return nil, fs.ErrNotExist
		}
		ents, err := s.readDirInode(ctx, in)
		if err != nil {
			return nil, err
		}
		found := false
		for _, e := range ents {
			if e.name == part {
				if in, err = s.inode(ctx, e.ref); err != nil {
					return nil, err
				}
				found = true
				break
			}
		}
		if !found {
			return nil, fs.ErrNotExist
		}
	}
	return in, nil
}

// readFileInode returns a regular file's content, refusing more than limit
// bytes before reading any data block.
func (s *squashReader) readFileInode(ctx context.Context, in *sqInode, limit int64) ([]byte, error) {
	if !in.isFile() {
		return nil, errors.New("not a regular file")
	}
	if limit < 0 || in.size > uint64(limit) {
		return nil, fmt.Errorf("is %d bytes, more than the %d allowed", in.size, limit)
	}
	bs := uint64(s.sb.blockSize)
	nblocks := in.size / bs
	tail := in.size % bs
	if in.frag == sqNone32 && tail != 0 {
		nblocks++
		tail = 0
	}
	sizes, _, err := s.readMeta(ctx, in.blockList, int(nblocks)*4)
	if err != nil {
		return nil, err
	}
	out := make([]byte, 0, in.size)
	at := in.blocksStart
	for i := range int(nblocks) {
		want := int(min(bs, in.size-uint64(len(out))))
		word := binary.LittleEndian.Uint32(sizes[4*i:])
		data, err := s.dataBlock(ctx, at, word, want)
		if err != nil {
			return nil, err
		}
		at += uint64(word & (sqDataUncomp - 1))
		out = append(out, data...)
	}
	if tail > 0 {
		frag, err := s.fragment(ctx, in.frag)
		if err != nil {
			return nil, err
		}
		if uint64(in.fragOff) > uint64(len(frag)) || tail > uint64(len(frag))-uint64(in.fragOff) {
			return nil, corrupt("file tail at %d (+%d) outside its %d-byte fragment", in.fragOff, tail, len(frag))
		}
		out = append(out, frag[in.fragOff:uint64(in.fragOff)+tail]...)
	}
	return out, nil
}

// dataBlock reads one data block that must hold exactly want bytes.
func (s *squashReader) dataBlock(ctx context.Context, at uint64, word uint32, want int) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	n := int(word & (sqDataUncomp - 1))
	if n == 0 && word == 0 { // a sparse block
		return make([]byte, want), s.charge(want)
	}
	if n == 0 || word>>25 != 0 || n > int(s.sb.blockSize) || at > uint64(s.size) {
		return nil, corrupt("data block of %d bytes at %d", n, at)
	}
	raw := make([]byte, n)
	if err := s.readRaw(raw, int64(at), "data block"); err != nil {
		return nil, err
	}
	data := raw
	if word&sqDataUncomp == 0 {
		var err error
		if data, err = s.decode(raw, int(s.sb.blockSize)); err != nil {
			return nil, corrupt("data block at %d: %v", at, err)
		}
	}
	if err := s.charge(len(raw) + len(data)); err != nil {
		return nil, err
	}
	if len(data) != want {
		return nil, corrupt("data block at %d holds %d bytes, the file needs %d", at, len(data), want)
	}
	return data, nil
}

// fragment returns fragment block i, decompressed.
func (s *squashReader) fragment(ctx context.Context, i uint32) ([]byte, error) {
	if i >= s.sb.fragments || s.sb.fragTable >= uint64(s.size) {
		return nil, corrupt("fragment %d of %d", i, s.sb.fragments)
	}
	e, err := s.tableEntry(ctx, s.sb.fragTable, int(i), 16)
	if err != nil {
		return nil, fmt.Errorf("fragment table: %w", err)
	}
	start, word := binary.LittleEndian.Uint64(e), binary.LittleEndian.Uint32(e[8:])
	n := int(word & (sqDataUncomp - 1))
	if n == 0 || word>>25 != 0 || n > int(s.sb.blockSize) || start > uint64(s.size) {
		return nil, corrupt("fragment block of %d bytes at %d", n, start)
	}
	raw := make([]byte, n)
	if err := s.readRaw(raw, int64(start), "fragment block"); err != nil {
		return nil, err
	}
	data := raw
	if word&sqDataUncomp == 0 {
		if data, err = s.decode(raw, int(s.sb.blockSize)); err != nil {
			return nil, corrupt("fragment block at %d: %v", start, err)
		}
	}
	return data, s.charge(len(raw) + len(data))
}

// xattrPrefixes are the namespaces of squashfs xattr keys (type & 0xFF).
var xattrPrefixes = []string{"user.", "trusted.", "security."}

// xattr returns the value of the attribute name of an inode's xattr set
// idx, or ok false.
func (s *squashReader) xattr(ctx context.Context, idx uint32, name string) (value []byte, ok bool, err error) {
	if idx == sqNone32 || s.sb.flags&sqFlagNoXattrs != 0 || s.sb.xattrTable == sqNone64 {
		return nil, false, nil
	}
	if s.xattrKV == 0 {
		var h [16]byte
		if err := s.readRaw(h[:], int64(s.sb.xattrTable), "xattr table"); err != nil {
			return nil, false, err
		}
		kv := binary.LittleEndian.Uint64(h[:])
		if kv >= uint64(s.size) {
			return nil, false, corrupt("xattr table at %d", kv)
		}
		s.xattrKV, s.xattrIDs = int64(kv), binary.LittleEndian.Uint32(h[8:])
	}
	if idx >= s.xattrIDs {
		return nil, false, corrupt("xattr set %d of %d", idx, s.xattrIDs)
	}
	e, err := s.tableEntry(ctx, s.sb.xattrTable+16, int(idx), 16)
	if err != nil {
		return nil, false, fmt.Errorf("xattr table: %w", err)
	}
	le := binary.LittleEndian
	count := le.Uint32(e[8:])
	if count > sqMaxXattrs {
		return nil, false, corrupt("xattr set with %d attributes", count)
	}
	pos, err := s.ref(uint64(s.xattrKV), le.Uint64(e))
	if err != nil {
		return nil, false, err
	}
	for range count {
		k, p, err := s.readMeta(ctx, pos, 4)
		if err != nil {
			return nil, false, err
		}
		typ, n := le.Uint16(k), int(le.Uint16(k[2:]))
		key, p, err := s.readMeta(ctx, p, n)
		if err != nil {
			return nil, false, err
		}
		vs, p, err := s.readMeta(ctx, p, 4)
		if err != nil {
			return nil, false, err
		}
		vn := int64(le.Uint32(vs))
		if vn > sqMaxXattrValue {
			return nil, false, corrupt("xattr value of %d bytes", vn)
		}
		v, p, err := s.readMeta(ctx, p, int(vn))
		if err != nil {
			return nil, false, err
		}
		pos = p
		if int(typ&0xFF) >= len(xattrPrefixes) || xattrPrefixes[typ&0xFF]+string(key) != name {
			continue
		}
		if typ&0x100 != 0 { // the value is stored out of line
			if len(v) != 8 {
				return nil, false, corrupt("out-of-line xattr reference of %d bytes", len(v))
			}
			vp, err := s.ref(uint64(s.xattrKV), le.Uint64(v))
			if err != nil {
				return nil, false, err
			}
			vs, vp, err := s.readMeta(ctx, vp, 4)
			if err != nil {
				return nil, false, err
			}
			if vn := le.Uint32(vs); vn > sqMaxXattrValue {
				return nil, false, corrupt("xattr value of %d bytes", vn)
			}
			if v, _, err = s.readMeta(ctx, vp, int(le.Uint32(vs))); err != nil {
				return nil, false, err
			}
		}
		return v, true, nil
	}
	return nil, false, nil
}

// walk calls fn for every entry under the root, depth first, with its
// slash-separated path and inode. A directory is entered once: a crafted
// entry pointing back at an ancestor is an error, not a loop.
func (s *squashReader) walk(ctx context.Context, fn func(p string, in *sqInode) error) error {
	root, err := s.inode(ctx, s.sb.rootInode)
	if err != nil {
		return err
	}
	if !root.isDir() {
		return corrupt("the root is not a directory")
	}
	type dir struct {
		path string
		in   *sqInode
	}
	seen := map[uint64]bool{s.sb.rootInode: true}
	stack := []dir{{"", root}}
	for len(stack) > 0 {
		d := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		ents, err := s.readDirInode(ctx, d.in)
		if err != nil {
			return fmt.Errorf("list %s: %w", shown("/"+d.path), err)
		}
		for _, e := range ents {
			p := e.name
			if d.path != "" {
				p = d.path + "/" + e.name
			}
			if len(p) > sqMaxPath {
				return corrupt("path longer than %d bytes under %s", sqMaxPath, shown("/"+d.path))
			}
			in, err := s.inode(ctx, e.ref)
			if err != nil {
				return fmt.Errorf("%s: %w", shown("/"+p), err)
			}
			if err := fn(p, in); err != nil {
				return err
			}
			if in.isDir() {
				if seen[e.ref] {
					return corrupt("directory %s is entered twice (a loop)", shown("/"+p))
				}
				seen[e.ref] = true
				stack = append(stack, dir{p, in})
			}
		}
	}
	return nil
}

func splitPath(name string) []string {
	var out []string
	for _, p := range strings.Split(name, "/") {
		if p != "" && p != "." {
			out = append(out, p)
		}
	}
	return out
}

// shown is a name from an image as a message shows it: escaped as every
// printer escapes untrusted text (extension.Escape: a newline cannot split
// the message, a bidi override cannot hide a name), a long path cut in the
// middle (at character boundaries).
func shown(name string) string {
	if len(name) > 160 {
		head, tail := 80, len(name)-60
		for i := 1; i < utf8.UTFMax && !utf8.RuneStart(name[head]); i++ {
			head--
		}
		for i := 1; i < utf8.UTFMax && !utf8.RuneStart(name[tail]); i++ {
			tail++
		}
		name = name[:head] + "..." + name[tail:]
	}
	return extension.Escape(name)
}

// Decompressors: each refuses to produce more than max bytes.

func inflate(src []byte, max int) ([]byte, error) {
	zr, err := zlib.NewReader(bytes.NewReader(src))
	if err != nil {
		return nil, err
	}
	defer zr.Close()
	return readMax(zr, max)
}

func unlz4(src []byte, max int) ([]byte, error) {
	dst := make([]byte, max)
	n, err := lz4.UncompressBlock(src, dst)
	if err != nil {
		return nil, err
	}
	return dst[:n], nil
}

func unzstd(d *zstd.Decoder, src []byte, max int) ([]byte, error) {
	out, err := d.DecodeAll(src, make([]byte, 0, max))
	if err != nil {
		return nil, err
	}
	if len(out) > max {
		return nil, fmt.Errorf("block decompresses to more than %d bytes", max)
	}
	return out, nil
}

func unlzo(src []byte, max int) ([]byte, error) {
	dst := make([]byte, max)
	n, err := lzo.Decompress(src, dst)
	if err != nil {
		return nil, err
	}
	return dst[:n], nil
}

// unlzma decodes squashfs's lzma: the legacy .lzma format, whose 13-byte
// header gives the dictionary size, checked before the decoder allocates it.
func unlzma(src []byte, max, blockSize int) ([]byte, error) {
	if len(src) < 13 {
		return nil, errors.New("lzma block shorter than its header")
	}
	if dict := binary.LittleEndian.Uint32(src[1:]); dict > uint32(blockSize) && dict > 1<<20 {
		return nil, fmt.Errorf("lzma dictionary of %d bytes for a %d-byte block", dict, blockSize)
	}
	lr, err := lzma.NewReader(bytes.NewReader(src))
	if err != nil {
		return nil, err
	}
	return readMax(lr, max)
}

// unxz decodes one xz stream whose LZMA2 dictionary is at most the block
// size (mksquashfs never uses more): the Go decoder allocates the
// dictionary the stream asks for, up to 4 GiB.
func unxz(src []byte, max, blockSize int) ([]byte, error) {
	dict, err := xzDictSize(src)
	if err != nil {
		return nil, err
	}
	if dict > uint64(blockSize) && dict > 1<<20 {
		return nil, fmt.Errorf("xz dictionary of %d bytes for a %d-byte block", dict, blockSize)
	}
	xr, err := xz.ReaderConfig{SingleStream: true}.NewReader(bytes.NewReader(src))
	if err != nil {
		return nil, err
	}
	return readMax(xr, max)
}

// xzDictSize reads the LZMA2 dictionary size from the first block header
// of an xz stream; any other filter (BCJ, delta) is errUnsupported.
func xzDictSize(src []byte) (uint64, error) {
	const streamHeader = 12
	if len(src) < streamHeader+2 || string(src[:6]) != "\xFD7zXZ\x00" {
		return 0, errors.New("not an xz stream")
	}
	h := src[streamHeader:]
	size := (int(h[0]) + 1) * 4
	if h[0] == 0 || size > len(h) {
		return 0, errors.New("bad xz block header")
	}
	h = h[:size]
	flags := h[1]
	filters := int(flags&3) + 1
	p := 2
	varint := func() (uint64, bool) {
		var v uint64
		for i := 0; i < 9 && p < len(h); i++ {
			b := h[p]
			p++
			v |= uint64(b&0x7F) << (7 * i)
			if b&0x80 == 0 {
				return v, true
			}
		}
		return 0, false
	}
	if flags&0x40 != 0 {
		if _, ok := varint(); !ok {
			return 0, errors.New("bad xz block header")
		}
	}
	if flags&0x80 != 0 {
		if _, ok := varint(); !ok {
			return 0, errors.New("bad xz block header")
		}
	}
	// Only LZMA2 alone: a filter before it (BCJ, delta) is unsupported,
	// and LZMA2 must be the last (here, the only) one.
	id, ok1 := varint()
	n, ok2 := varint()
	if !ok1 || !ok2 || n > uint64(len(h)-p) {
		return 0, errors.New("bad xz filter flags")
	}
	props := h[p : p+int(n)]
	if id != 0x21 {
		return 0, fmt.Errorf("%w: xz filter %#x", errUnsupported, id)
	}
	if filters != 1 || len(props) != 1 || props[0] > 40 {
		return 0, errors.New("bad xz LZMA2 properties")
	}
	if props[0] == 40 {
		return math.MaxUint32, nil
	}
	return uint64(2|props[0]&1) << (props[0]/2 + 11), nil
}

func readMax(r io.Reader, max int) ([]byte, error) {
	out, err := io.ReadAll(io.LimitReader(r, int64(max)+1))
	if err != nil {
		return nil, err
	}
	if len(out) > max {
		return nil, fmt.Errorf("block decompresses to more than %d bytes", max)
	}
	return out, nil
}
