package extension

import (
	"errors"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// MaxNameLen bounds names and versions so that NAME-VERSION-ARCH.raw and the
// store's temp names fit in NAME_MAX (255).
const MaxNameLen = 100

// ValidateName checks an extension name the way systemd checks image names
// (a valid file name: no '/', not "." or "..", no control characters, valid
// UTF-8, not a hidden or temporary file) and additionally refuses
// whitespace and a leading '-', so the name is safe everywhere we use it:
// file names, tags, unit file names and command lines.
func ValidateName(name string) error {
	return validateComponent("extension name", name)
}

// ValidateVersion checks an extension version with the same rules as names.
func ValidateVersion(version string) error {
	return validateComponent("extension version", version)
}

// ErrInvalidName is wrapped by the errors of ValidateName and
// ValidateVersion: the name was written wrong, as opposed to not found.
var ErrInvalidName = errors.New("invalid extension name or version")

// nameError keeps ValidateName's sentence and says ErrInvalidName.
type nameError struct{ msg string }

func (e *nameError) Error() string { return e.msg }
func (e *nameError) Unwrap() error { return ErrInvalidName }

func validateComponent(what, s string) error {
	if msg := componentProblem(what, s); msg != "" {
		return &nameError{msg}
	}
	return nil
}

func componentProblem(what, s string) string {
	switch {
	case s == "":
		return fmt.Sprintf("%s is empty", what)
	case len(s) > MaxNameLen:
		return fmt.Sprintf("%s %.20q... is %d bytes long, at most %d are allowed", what, s, len(s), MaxNameLen)
	case !utf8.ValidString(s):
		return fmt.Sprintf("%s %q is not valid UTF-8", what, s)
	case s == "." || s == "..":
		return fmt.Sprintf("%s %q is not a valid file name", what, s)
	case strings.HasPrefix(s, "."):
		return fmt.Sprintf("%s %q starts with '.': systemd ignores hidden images", what, s)
	case strings.HasPrefix(s, "-"):
		return fmt.Sprintf("%s %q starts with '-'", what, s)
	case strings.HasSuffix(s, "~"):
		return fmt.Sprintf("%s %q ends with '~': systemd ignores backup files", what, s)
	}
	for _, c := range s {
		switch {
		case c == '/' || c == '\\':
			return fmt.Sprintf("%s %q contains %q", what, s, c)
		case unicode.IsControl(c):
			return fmt.Sprintf("%s %q contains a control character", what, s)
		case unicode.IsSpace(c):
			return fmt.Sprintf("%s %q contains whitespace", what, s)
		}
	}
	return ""
}

// ReleaseDir is where an extension image carries its metadata, relative to
// the image's root.
const ReleaseDir = "usr/lib/extension-release.d"

// ReleasePath returns the path of NAME's extension-release file inside an
// image, relative to its root.
func ReleasePath(name string) string {
	return ReleaseDir + "/extension-release." + name
}

// FileName returns the canonical image file name NAME-VERSION-ARCH.raw.
func FileName(name, version string, arch Arch) string {
	return name + "-" + version + "-" + string(arch) + ".raw"
}

// SysextDirs are the directories systemd-sysext merges images from, first
// name wins; ConfextDirs are systemd-confext's.
var (
	SysextDirs  = []string{"/etc/extensions", "/run/extensions", "/var/lib/extensions", "/usr/lib/extensions", "/usr/local/lib/extensions"}
	ConfextDirs = []string{"/etc/confexts", "/run/confexts", "/var/lib/confexts", "/usr/lib/confexts", "/usr/local/lib/confexts"}
)

// IsMergeDir reports whether dir (an absolute, clean path) is one of the
// directories systemd-sysext or systemd-confext merges from, also below
// another root (/sysroot/var/lib/extensions).
func IsMergeDir(dir string) bool {
	for _, d := range append(SysextDirs[:len(SysextDirs):len(SysextDirs)], ConfextDirs...) {
		if strings.HasSuffix(dir, d) {
			return true
		}
	}
	return false
}
