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

// Kind is what an image extends.
type Kind string

// The kinds builder writes.
const (
	// KindSysext, the default: a system extension (tree top level usr/ and
	// opt/, metadata at usr/lib/extension-release.d/extension-release.NAME).
	KindSysext Kind = "sysext"
	// KindConfext: a configuration extension for systemd-confext (tree top
	// level etc/ only, metadata at
	// etc/extension-release.d/extension-release.NAME with ID and
	// VERSION_ID or CONFEXT_LEVEL).
	KindConfext Kind = "confext"
)

// Options says what to build. Tree is read, never modified.
type Options struct {
	Kind            Kind               // "" = KindSysext
	Tree            string             // input directory with usr/ (and opt/); etc/ for a confext
	Meta            extension.Metadata // Name, Version, Arch, ID, VersionID/SysextLevel, Scopes
	Format          ImageFormat        // default Squashfs; DDI for a disk image
	Compression     string             // tool-specific; "" = the format's default
	Enable          []string           // units to uphold (must exist in the tree)
	Output          string             // file or directory; "" = current directory
	Force           bool               // replace an existing output file
	SourceDateEpoch int64              // timestamps in the image; default 0

	// Digest also hashes the finished image into Result.Digest. Off by
	// default: push and inspect hash an image when they need to, and the
	// read would add a third to a fast (lz4) build.
	Digest bool

	// Sync flushes the image to disk before it is renamed into place. It
	// is always on when the output directory is one systemd-sysext or
	// systemd-confext merges from, where a crash must not leave a torn
	// image for the next boot; elsewhere the output is a build artifact
	// that the same inputs rebuild byte for byte, and the wait is skipped.
	Sync bool

	// StageDir, when set, is where EROFS stages the tree (hard links to
	// its files): a directory on the tree's filesystem, for a tree that is
	// not on the output's (a from-image tree on tmpfs). Default: next to
	// the output.
	StageDir string

	// KeepPrivileges lists files (absolute paths in the image, as in
	// /usr/bin/sudo) that keep their set-user-ID/set-group-ID bits and
	// file capabilities. Every other file loses them: the image is built
	// all-root, so they would grant root's privileges on every host that
	// merges it (see privileges.go).
	KeepPrivileges []string

	// Progress, when set, receives the filesystem tool's own progress and
	// summary output (for a terminal); otherwise the tool runs quietly.
	Progress io.Writer

	// Filesystem is a DDI's root partition filesystem: EROFS (default) or
	// Squashfs. Compression applies to it.
	Filesystem ImageFormat
	// SignKey and Certificate, both or neither, make a DDI signed: the
	// unencrypted PEM private key signs the root hash (PKCS#7), the PEM
	// X.509 certificate of that key goes into the signature.
	SignKey     string
	Certificate string
}
