package builder

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/sysext/sysext/extension"
	"github.com/sysext/sysext/fsimage"
)

// confextReleaseDir is where systemd-confext looks for a configuration
// extension's metadata.
const confextReleaseDir = "etc/extension-release.d"

// FieldConfextLevel is a confext's counterpart of SYSEXT_LEVEL.
const FieldConfextLevel = "CONFEXT_LEVEL"

// ConfextReleasePath is the path of NAME's extension-release file inside a
// configuration extension.
func ConfextReleasePath(name string) string {
	return confextReleaseDir + "/extension-release." + name
}

// ConfextRelease is the extension-release file of a confext for m: ID and
// VERSION_ID (or CONFEXT_LEVEL, from m.SysextLevel), so that it merges on
// the same OS as the system extension built with m.
func ConfextRelease(m extension.Metadata) *extension.Release {
	rel := &extension.Release{}
	rel.Set(extension.FieldID, m.ID)
	if m.VersionID != "" {
		rel.Set(extension.FieldVersionID, m.VersionID)
	}
	if m.SysextLevel != "" {
		rel.Set(FieldConfextLevel, m.SysextLevel)
	}
	return rel
}

// CheckConfextTree checks that tree can become a configuration extension:
// a directory whose top level holds only etc/, a real directory, without
// an extension-release file of its own (the build writes it).
func CheckConfextTree(tree string) error {
	st, err := os.Stat(tree)
	if errors.Is(err, fs.ErrNotExist) {
		return treeError("%s does not exist: name the directory to build from (no such file or directory)", tree)
	}
	if err != nil {
		return treeError("%v", err)
	}
	if !st.IsDir() {
		return treeError("%s is not a directory", tree)
	}
	ents, err := os.ReadDir(tree)
	if err != nil {
		return treeError("%v", err)
	}
	hasEtc := false
	for _, e := range ents {
		p := filepath.Join(tree, e.Name())
		if e.Name() != "etc" {
			return treeError("%s: systemd-confext merges only etc/: leave it out of the confext", p)
		}
		if e.Type()&fs.ModeSymlink != 0 || !e.IsDir() {
			return treeError("%s must be a directory, not a symlink or file", p)
		}
		hasEtc = true
	}
	if !hasEtc {
		return treeError("%s has no etc/ directory: put the configuration under etc/", tree)
	}
	dir := filepath.Join(tree, filepath.FromSlash(confextReleaseDir))
	rels, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return treeError("%v", err)
	}
	for _, e := range rels {
		if strings.HasPrefix(e.Name(), "extension-release.") {
			return treeError("%s: the build writes the confext's extension-release from its flags: remove it from the tree", filepath.Join(dir, e.Name()))
		}
	}
	return nil
}

// confextFiles checks a confext tree and returns its extension-release and
// the files to add (that file).
func confextFiles(tree string, m extension.Metadata) (*extension.Release, []dropIn, error) {
	if err := CheckConfextTree(tree); err != nil {
		return nil, nil, err
	}
	rel := ConfextRelease(m)
	return rel, []dropIn{{path: ConfextReleasePath(m.Name), content: rel.Format()}}, nil
}

// readConfext reads back the confext image the tool wrote: its
// extension-release must be there, and it is returned as fsimage.Info (no
// Upholds, Meta from the file) for Build's checks.
func readConfext(ctx context.Context, image, name string, format ImageFormat) (*fsimage.Info, error) {
	data, err := fsimage.ReadFile(ctx, image, ConfextReleasePath(name), extension.MaxReleaseSize)
	if err != nil {
		return nil, err
	}
	rel, err := extension.ParseRelease(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", ConfextReleasePath(name), err)
	}
	st, err := os.Stat(image)
	if err != nil {
		return nil, err
	}
	return &fsimage.Info{
		Path: image, Format: fsimage.Format(format), Size: st.Size(),
		Name: name, Release: rel,
		ReleaseBytes: bytes.Clone(data),
	}, nil
}
