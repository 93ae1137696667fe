package extract

import (
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strings"

	"golang.org/x/sys/unix"
)

// CapabilityXattr holds a file's capabilities (capabilities(7)).
const CapabilityXattr = "security.capability"

// Privileges is the policy for what lets a program gain privileges when
// it runs: set-user-ID and set-group-ID bits and file capabilities. An
// image is built all-root from content someone else wrote (an upstream
// archive, a container image, a rootfs), so a set-user-ID program owned by
// anyone becomes set-user-ID root on every host that merges it. The zero
// value keeps everything (a faithful copy).
type Privileges struct {
	// Drop removes them from every regular file not in Keep.
	Drop bool
	// Keep lists absolute paths ("/usr/bin/sudo", relative to the tree)
	// that keep them: the user asked for them by name.
	Keep map[string]bool
}

// DropUnless returns the policy that drops privileges from every file but
// the paths in keep (each made absolute and cleaned).
func DropUnless(keep []string) Privileges {
	p := Privileges{Drop: true, Keep: map[string]bool{}}
	for _, k := range keep {
		p.Keep[path.Clean("/"+k)] = true
	}
	return p
}

// drops reports whether the file at rel ("/usr/bin/su") loses what
// privileges it has.
func (p Privileges) drops(rel string) bool { return p.Drop && !p.Keep[rel] }

// PrivilegedMode reports set-user-ID or set-group-ID bits on a regular file.
func PrivilegedMode(mode fs.FileMode) bool {
	return mode.IsRegular() && mode&(fs.ModeSetuid|fs.ModeSetgid) != 0
}

// HasCapabilities reports whether the file at p (not followed if a
// symlink) carries file capabilities.
func HasCapabilities(p string) (bool, error) {
	_, err := unix.Lgetxattr(p, CapabilityXattr, nil)
	switch err {
	case nil:
		return true, nil
	case unix.ENODATA, unix.ENOTSUP:
		return false, nil
	}
	return false, &fs.PathError{Op: "getxattr", Path: p, Err: err}
}

// DroppedNote is the one-line warning for privileges dropped from files
// (absolute paths in the tree), naming the way to keep them.
func DroppedNote(paths []string) string {
	sorted := append([]string(nil), paths...)
	sort.Strings(sorted)
	shown := sorted
	more := ""
	if len(shown) > 10 {
		shown, more = shown[:10], fmt.Sprintf(" and %d more", len(sorted)-10)
	}
	return fmt.Sprintf("dropped the set-user-ID/set-group-ID bits and file capabilities of %d files, which would grant root's privileges on every host (the image is owned by root): %s%s; keep them for a file you trust with --keep-privileges PATH",
		len(sorted), strings.Join(shown, ", "), more)
}
