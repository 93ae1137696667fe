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
// whitespace, a leading '-' and every character that is not shown as
// itself (Unicode format characters such as U+202E RIGHT-TO-LEFT OVERRIDE
// and U+200B ZERO WIDTH SPACE, private-use and unassigned code points), so
// the name is safe everywhere we use it and reads as what it is: file
// names, tags, unit file names, command lines and what people are shown.
func ValidateName(name string) error {
	return validateComponent("extension name", name)
}

// versionPunct are the characters besides ASCII letters and digits that a
// version may hold: systemd-sysupdate's version_is_valid() set (".,_+-")
// and the UAPI version format's ("~" sorts lower, "^" higher).
const versionPunct = ".,_+-~^"

// ValidateVersion checks an extension version: the rules of names, and only
// ASCII letters, digits and ".,_+-~^" (systemd's version characters: what
// systemd-sysupdate accepts and CompareVersions orders).
func ValidateVersion(version string) error {
	if err := validateComponent("extension version", version); err != nil {
		return err
	}
	for _, c := range version {
		if !(c < utf8.RuneSelf && (isDigit(byte(c)) || isAlpha(byte(c)) || strings.ContainsRune(versionPunct, c))) {
			return fmt.Errorf("extension version %q contains %q: use ASCII letters, digits and %q (systemd's version characters)", version, c, versionPunct)
		}
	}
	return nil
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
	if len(s) > MaxNameLen {
		return fmt.Sprintf("%s %.20q... is %d bytes long, at most %d are allowed", what, s, len(s), MaxNameLen)
	}
	if msg := fileNameProblem(what, s); msg != "" {
		return msg
	}
	switch {
	case strings.HasPrefix(s, "-"):
		return fmt.Sprintf("%s %q starts with '-'", what, s)
	case strings.HasSuffix(s, "~"):
		return fmt.Sprintf("%s %q ends with '~': systemd ignores backup files", what, s)
	case strings.ContainsFunc(s, unicode.IsSpace):
		return fmt.Sprintf("%s %q contains whitespace", what, s)
	}
	return ""
}

// fileNameProblem is the rule every name we create a file by follows (an
// extension name, an image file, a title from an artifact): one path
// component of at most NAME_MAX bytes, not hidden, valid UTF-8, and every
// character shown as itself. It says what is wrong, or "".
func fileNameProblem(what, s string) string {
	switch {
	case s == "":
		return fmt.Sprintf("%s is empty", what)
	case len(s) > 255:
		return fmt.Sprintf("%s %.20q... is %d bytes long, at most 255 are allowed", what, s, len(s))
	case !utf8.ValidString(s):
		return fmt.Sprintf("%s %q is not valid UTF-8", what, s)
	case s == "." || s == "..":
		return fmt.Sprintf("%s %q is not a valid file name", what, s)
	case strings.HasPrefix(s, "."):
		return fmt.Sprintf("%s %q starts with '.': systemd ignores hidden images", what, s)
	}
	for _, c := range s {
		switch {
		case c == '/' || c == '\\':
			return fmt.Sprintf("%s %q contains %q", what, s, c)
		case unicode.IsControl(c):
			return fmt.Sprintf("%s %q contains a control character", what, s)
		case c != ' ' && !unicode.IsPrint(c):
			return fmt.Sprintf("%s %q contains %U, a character that is not shown as itself", what, s, c)
		}
	}
	return ""
}

// ValidateFileName checks a file name taken from untrusted metadata (the
// title annotation of an artifact's layer) before a file is created by it:
// the rules every file name of ours follows (one path component of at most
// 255 bytes, not hidden, valid UTF-8, every character shown as itself) and
// no "..". Unlike an extension name it may hold spaces.
func ValidateFileName(name string) error {
	if msg := fileNameProblem("file name", name); msg != "" {
		return errors.New(msg)
	}
	if strings.Contains(name, "..") {
		return fmt.Errorf("file name %q contains \"..\"", name)
	}
	return nil
}

// ImageSuffix ends the name of every image file systemd-sysext loads.
const ImageSuffix = ".raw"

// ValidateImageFile checks the name of an image file sysext stores or
// links: an extension name (ValidateName) that ends in ".raw".
func ValidateImageFile(file string) error {
	if err := ValidateName(file); err != nil {
		return err
	}
	if !strings.HasSuffix(file, ImageSuffix) {
		return fmt.Errorf("image file name %q does not end in %s", file, ImageSuffix)
	}
	return nil
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
	return name + "-" + version + "-" + string(arch) + ImageSuffix
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
