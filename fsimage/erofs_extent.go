package fsimage

import (
	"bytes"
	"context"
	"os"
	"regexp"
	"strconv"
	"strings"

	"github.com/pierrec/lz4/v4"
)

// maxPcluster bounds the compressed bytes read for one file.
const maxPcluster = 1 << 20

var (
	dumpSize   = regexp.MustCompile(`(?m)^Size: (\d+) `)
	dumpExtent = regexp.MustCompile(`(?m)^\s*\d+:\s+(\d+)\.\.\s*(\d+) \|\s*(\d+) :\s+(\d+)\.\.\s*(\d+) \|\s*(\d+)$`)
)

// readCompressedExtent reads a small compressed EROFS file without
// extracting the image: dump.erofs -e maps it to its extents, and a file
// held in one lz4 physical cluster (every metadata file sysext reads: at
// most 64 KiB) is decompressed here. The data of a cluster is
// right-aligned (LZ4_0PADDING) so leading zeros are skipped; a cluster
// stored plainly is as long as the file. ok is false for anything else
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
	m := dumpSize.FindSubmatch(out)
	exts := dumpExtent.FindAllSubmatch(out, -1)
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
	dst := make([]byte, size)
	if n, err := lz4.UncompressBlock(bytes.TrimLeft(src, "\x00"), dst); err == nil && int64(n) == size {
		return dst, true
	}
	if plen >= size { // a cluster compression did not shrink is stored as is
		return src[:size], true
	}
	return nil, false
}
