package builder

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/sysext/sysext/extension"
	"github.com/sysext/sysext/internal/osrelease"
)

// ErrBadTree is wrapped by every error about the input tree's content.
var ErrBadTree = errors.New("bad extension tree")

// treeError names a path in the tree and what to do about it.
func treeError(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrBadTree, fmt.Sprintf(format, args...))
}

// allowedTop are the only top-level directories systemd-sysext merges.
var allowedTop = map[string]bool{"usr": true, "opt": true}

// CheckTree checks that tree can become a system extension: a directory
// whose top level holds usr/ (required) and opt/ only, both real
// directories. It returns warnings for content that merges but is likely a
// mistake (usr/sbin). Callers that prepare a tree (flix, recipes, images)
// can run it before Build, which runs it too.
func CheckTree(tree string) (warnings []string, err error) {
	st, err := os.Stat(tree)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, treeError("%s does not exist: name the directory to build from (no such file or directory)", tree)
	}
	if err != nil {
		return nil, treeError("%v", err)
	}
	if !st.IsDir() {
		return nil, treeError("%s is not a directory", tree)
	}
	ents, err := os.ReadDir(tree)
	if err != nil {
		return nil, treeError("%v", err)
	}
	hasUsr := false
	for _, e := range ents {
		p := filepath.Join(tree, e.Name())
		if !allowedTop[e.Name()] {
			return nil, treeError("%s: systemd-sysext merges only usr/ and opt/: move it under usr/ (for example usr/share/NAME/ with a tmpfiles.d rule that copies it) or leave it out", p)
		}
		if e.Type()&fs.ModeSymlink != 0 || !e.IsDir() {
			return nil, treeError("%s must be a directory, not a symlink or file", p)
		}
		if e.Name() == "usr" {
			hasUsr = true
		}
	}
	if !hasUsr {
		return nil, treeError("%s has no usr/ directory: put the extension's files under usr/ (and opt/)", tree)
	}
	sbin := filepath.Join(tree, "usr", "sbin")
	if fi, err := os.Lstat(sbin); err == nil {
		n := 0
		if fi.IsDir() {
			if es, err := os.ReadDir(sbin); err == nil {
				n = len(es)
			}
		}
		if !fi.IsDir() || n > 0 {
			warnings = append(warnings, fmt.Sprintf("%s: on Flatcar and Fedora /usr/sbin is a link to /usr/bin, so these files may not merge there: install them under usr/bin", sbin))
		}
	}
	return warnings, nil
}

// existingRelease reads the tree's extension-release files. Another
// extension's file is an error (an image carries exactly one); NAME's own
// is returned for checking against the build's fields (nil when absent).
func existingRelease(tree, name string) (*extension.Release, error) {
	dir := filepath.Join(tree, filepath.FromSlash(extension.ReleaseDir))
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, treeError("%v", err)
	}
	var own *extension.Release
	for _, e := range ents {
		other, ok := strings.CutPrefix(e.Name(), "extension-release.")
		if !ok {
			continue
		}
		p := filepath.Join(dir, e.Name())
		if other != name {
			return nil, treeError("%s belongs to extension %q, not %q: an image carries exactly one extension-release file, remove it or use --name %s", p, other, name, other)
		}
		if !e.Type().IsRegular() {
			return nil, treeError("%s must be a regular file", p)
		}
		rel, err := osrelease.ReadFile(p)
		if err != nil {
			return nil, treeError("%v", err)
		}
		own = rel
	}
	return own, nil
}

// flagOf names the build flag behind each field, for messages.
var flagOf = map[string]string{
	extension.FieldID:                     "--os",
	extension.FieldVersionID:              "--version-id",
	extension.FieldSysextLevel:            "--sysext-level",
	extension.FieldArchitecture:           "--arch",
	extension.FieldSysextScope:            "--scope",
	extension.FieldExtensionReloadManager: "--enable",
	extension.FieldSysextID:               "--name",
	extension.FieldSysextVersionID:        "--version",
}

// mergeRelease checks the tree's own file against the build's fields and
// returns the file to write: the tree's assignments with ours on top.
func mergeRelease(path string, theirs, ours *extension.Release) (*extension.Release, error) {
	if theirs == nil {
		return ours, nil
	}
	merged := theirs.Clone()
	for _, k := range ours.Keys() {
		want := ours.Get(k)
		if have, ok := theirs.Lookup(k); ok && have != want {
			return nil, treeError("%s sets %s=%s but the build says %s=%s (%s): make them agree or remove the file from the tree", path, k, have, k, want, flagOf[k])
		}
		merged.Set(k, want)
	}
	return merged, nil
}

// unitTargets maps a unit type to the target whose drop-in upholds it.
var unitTargets = map[string]string{
	".service": "multi-user.target",
	".socket":  "sockets.target",
	".timer":   "timers.target",
	".path":    "paths.target",
}

// dropIn is one Upholds= drop-in to add.
type dropIn struct {
	path    string // relative to the image root, slash-separated
	content []byte
}

// dropIns checks each unit to enable and returns its drop-in.
func dropIns(tree, name string, units []string) ([]dropIn, error) {
	var out []dropIn
	seen := map[string]bool{}
	sorted := append([]string(nil), units...)
	sort.Strings(sorted)
	for _, u := range sorted {
		if seen[u] {
			continue
		}
		seen[u] = true
		// u becomes an Upholds= line and a file name: systemd's unit name
		// rules (extension.ValidateUnitName), nothing that breaks the line.
		if err := extension.ValidateUnitName(u); err != nil {
			return nil, fmt.Errorf("--enable %s: %w", extension.Escape(u), err)
		}
		target, ok := unitTargets[filepath.Ext(u)]
		if !ok {
			return nil, fmt.Errorf("--enable %s: only .service, .socket, .timer and .path units can be upheld", u)
		}
		if strings.HasSuffix(strings.TrimSuffix(u, filepath.Ext(u)), "@") {
			return nil, fmt.Errorf("--enable %s: a template cannot be started, name an instance such as %s", u, strings.Replace(u, "@", "@NAME", 1))
		}
		unitDir := filepath.Join(tree, "usr", "lib", "systemd", "system")
		candidates := []string{u}
		if at := strings.IndexByte(u, '@'); at > 0 {
			candidates = append(candidates, u[:at+1]+filepath.Ext(u))
		}
		found := false
		for _, c := range candidates {
			if _, err := os.Lstat(filepath.Join(unitDir, c)); err == nil {
				found = true
			}
		}
		if !found {
			return nil, treeError("--enable %s: %s does not exist: the unit must be in the tree under usr/lib/systemd/system/", u, filepath.Join(unitDir, u))
		}
		content := fmt.Sprintf("# Written by sysext build: start %s while extension %s is merged.\n[Unit]\nUpholds=%s\n", u, name, u)
		out = append(out, dropIn{
			path:    "usr/lib/systemd/system/" + target + ".d/" + name + "-" + u + ".conf",
			content: []byte(content),
		})
	}
	return out, nil
}
