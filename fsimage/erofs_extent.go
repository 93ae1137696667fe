package fsimage

import (
	"bytes"
	"compress/flate"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"

	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
	"github.com/ulikunitz/xz/lzma"
)

// maxPcluster bounds the compressed bytes read for one file.
const maxPcluster = 1 << 20

var (
	dumpSize   = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`(?m)^Size: (\d+) `) })
	dumpExtent = sync.OnceValue(func() *regexp.Regexp {
		return regexp.MustCompile(`(?m)^\s*\d+:\s+(\d+)\.\.\s*(\d+) \|\s*(\d+) :\s+(\d+)\.\.\s*(\d+) \|\s*(\d+)$`)
	})
)

// readCompressedExtent reads a small compressed EROFS file without
// extracting the image: dump.erofs -e maps it to its extents, and a file
// held in one physical cluster (every metadata file sysext reads: at
// most 64 KiB) is decompressed here, whichever of lz4, lzma, deflate and
// zstd the image uses. The data of a cluster is right-aligned
// (ZERO_PADDING) so leading zeros are skipped; a cluster stored plainly
// is as long as the file. ok is false for anything else
// (several extents, fragments shared with other files, a failed decode)
// and the caller falls back to fsck.erofs --extract.
func readCompressedExtent(ctx context.Context, image, name string, limit int64) (data []byte, ok bool) {
	if _, err := lookTool("dump.erofs"); err != nil {
		return nil, false
	}
	out, err := runToolLimit(ctx, 1<<20, "dump.erofs", "-e", "--path=/"+name, image)
	if err != nil {
		return nil, false
	}
	m := dumpSize().FindSubmatch(out)
	exts := dumpExtent().FindAllSubmatch(out, -1)
	if m == nil || len(exts) != 1 || !strings.Contains(string(out), "1 extents found") {
		return nil, false
	}
	num := func(b []byte) int64 {
		n, err := strconv.ParseInt(string(b), 10, 64)
		if err != nil {
			return -1
		}
		return n
	}
	size := num(m[1])
	e := exts[0]
	lstart, lend, llen, pstart, pend, plen := num(e[1]), num(e[2]), num(e[3]), num(e[4]), num(e[5]), num(e[6])
	if size < 0 || size > limit || lstart != 0 || lend != size || llen != size ||
		pstart < 0 || pend-pstart != plen || plen <= 0 || plen > maxPcluster {
		return nil, false
	}
	f, err := os.Open(image)
	if err != nil {
		return nil, false
	}
	defer f.Close()
	src := make([]byte, plen)
	if n, err := f.ReadAt(src, pstart); err != nil || int64(n) != plen {
		return nil, false
	}
	// The compressed data is right-aligned in its cluster: the kernel
	// skips the leading zeros for every algorithm (ZERO_PADDING).
	packed := bytes.TrimLeft(src, "\x00")
	algs, err := ErofsCompressors(f)
	if err != nil {
		return nil, false
	}
	for _, alg := range algs {
		if data, err := erofsDecode(alg, packed, size); err == nil && int64(len(data)) == size {
			return data, true
		}
	}
	if plen >= size { // a cluster compression did not shrink is stored as is
		return src[:size], true
	}
	return nil, false
}

// erofsDecode decompresses one physical cluster of alg holding exactly
// size bytes.
func erofsDecode(alg string, src []byte, size int64) ([]byte, error) {
	switch alg {
	case "lz4":
		dst := make([]byte, size)
		n, err := lz4.UncompressBlock(src, dst)
		return dst[:max(n, 0)], err
	case "lzma":
		return erofsMicroLZMA(src, size)
	case "deflate":
		return readLimited(flate.NewReader(bytes.NewReader(src)), size)
	case "zstd":
		d, err := zstd.NewReader(bytes.NewReader(src), zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(uint64(size)+maxPcluster))
		if err != nil {
			return nil, err
		}
		defer d.Close()
		return readLimited(d, size)
	}
	return nil, fmt.Errorf("unknown EROFS compressor %s", alg)
}

// erofsMicroLZMA decodes MicroLZMA, EROFS's LZMA: a raw LZMA1 stream
// whose first byte, always 0 in LZMA, holds the inverted properties byte,
// with neither header nor end marker. Given back its classic 13-byte
// header (properties, dictionary size, uncompressed size) and its 0 byte
// it is an .lzma stream. A dictionary as large as the file is enough: no
// match reaches before its start.
func erofsMicroLZMA(src []byte, size int64) ([]byte, error) {
	if len(src) < 2 {
		return nil, errors.New("short MicroLZMA stream")
	}
	hdr := make([]byte, lzma.HeaderLen+1, lzma.HeaderLen+len(src))
	hdr[0] = ^src[0]
	binary.LittleEndian.PutUint32(hdr[1:], uint32(max(size, lzma.MinDictCap)))
	binary.LittleEndian.PutUint64(hdr[5:], uint64(size))
	r, err := lzma.NewReader(bytes.NewReader(append(hdr, src[1:]...)))
	if err != nil {
		return nil, err
	}
	return readLimited(r, size)
}

// readLimited reads at most size bytes (one more tells a longer stream).
func readLimited(r io.Reader, size int64) ([]byte, error) {
	data, err := io.ReadAll(io.LimitReader(r, size+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) != size {
		return nil, fmt.Errorf("decompressed %d bytes, want %d", len(data), size)
	}
	return data, nil
}
