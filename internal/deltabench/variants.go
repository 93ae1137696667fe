package deltabench

import (
	"crypto/sha256"
	"fmt"
	"regexp"
	"strings"

	"github.com/sysext/sysext/builder"
)

// Variants are the builds measured: each format's default, the
// compressions a publisher would pick, and the tool options that might
// make images friendlier to deltas. The first of each format is the
// builder's default.
var Variants = []Variant{
	{Label: "squashfs zstd (default)", Format: builder.Squashfs},
	{Label: "squashfs zstd -b 128K (direct)", Format: builder.Squashfs, Extra: []string{"-b", "128K"}, SameAs: "squashfs zstd (default)"},
	{Label: "squashfs zstd:19", Format: builder.Squashfs, Compression: "zstd:19"},
	{Label: "squashfs xz", Format: builder.Squashfs, Compression: "xz"},
	{Label: "squashfs gzip", Format: builder.Squashfs, Compression: "gzip"},
	{Label: "squashfs lz4", Format: builder.Squashfs, Compression: "lz4"},
	{Label: "squashfs none", Format: builder.Squashfs, Compression: "none"},
	{Label: "squashfs zstd -no-fragments", Format: builder.Squashfs, Extra: []string{"-no-fragments"}},
	{Label: "squashfs zstd -b 1M", Format: builder.Squashfs, Extra: []string{"-b", "1M"}},
	{Label: "squashfs zstd -b 32K", Format: builder.Squashfs, Extra: []string{"-b", "32K"}},
	{Label: "squashfs zstd -b 32K -no-fragments", Format: builder.Squashfs, Extra: []string{"-b", "32K", "-no-fragments"}},
	{Label: "erofs lz4hc -C65536 (default)", Format: builder.EROFS},
	{Label: "erofs lz4hc -C65536 (direct)", Format: builder.EROFS, Extra: []string{"-C65536"}, SameAs: "erofs lz4hc -C65536 (default)"},
	{Label: "erofs lz4hc -C4096 (the default before)", Format: builder.EROFS, Extra: []string{"-C4096"}},
	{Label: "erofs lz4hc:12", Format: builder.EROFS, Compression: "lz4hc:12"},
	{Label: "erofs lz4", Format: builder.EROFS, Compression: "lz4"},
	{Label: "erofs none", Format: builder.EROFS, Compression: "none"},
	{Label: "erofs none --chunksize=4096", Format: builder.EROFS, Compression: "none", Extra: []string{"--chunksize=4096"}},
	{Label: "erofs lz4hc -Eztailpacking", Format: builder.EROFS, Extra: []string{"-Eztailpacking"}},
}

var unsafeChars = regexp.MustCompile(`[^A-Za-z0-9.=_-]+`)

// Key names v's images on disk: readable, and changed whenever the build
// arguments change.
func (v Variant) Key() string {
	h := sha256.Sum256([]byte(fmt.Sprint(v.Format, "\x00", v.Compression, "\x00", strings.Join(v.Extra, "\x00"))))
	return strings.Trim(unsafeChars.ReplaceAllString(v.Label, "_"), "_") + "-" + fmt.Sprintf("%x", h[:4])
}
