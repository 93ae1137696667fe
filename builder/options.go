package builder

import (
	"io"

	"github.com/sysext/sysext/extension"
)

// ImageFormat is the filesystem an image is written in.
type ImageFormat string

// The formats builder writes.
const (
	Squashfs ImageFormat = "squashfs"
	EROFS    ImageFormat = "erofs"
)

// Options says what to build. Tree is read, never modified.
type Options struct {
	Tree            string             // input directory with usr/ (and opt/)
	Meta            extension.Metadata // Name, Version, Arch, ID, VersionID/SysextLevel, Scopes
	Format          ImageFormat        // default Squashfs
	Compression     string             // tool-specific; "" = the format's default
	Enable          []string           // units to uphold (must exist in the tree)
	Output          string             // file or directory; "" = current directory
	Force           bool               // replace an existing output file
	SourceDateEpoch int64              // timestamps in the image; default 0

	// Progress, when set, receives the filesystem tool's own progress and
	// summary output (for a terminal); otherwise the tool runs quietly.
	Progress io.Writer
}
