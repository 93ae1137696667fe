package fromimage

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"

	"github.com/sysext/sysext/extension"
	"github.com/sysext/sysext/internal/osrelease"
)

// imageFields are the base's os-release fields that identify its exact OS
// image; they travel with the extension in its extension-release file.
var imageFields = []string{extension.FieldImageID, extension.FieldImageVersion}

// BaseImageFields returns the base's IMAGE_ID and IMAGE_VERSION from its
// os-release (as Result.OSRelease has it), only those present. A value
// os-release(5) does not allow is refused: it would end up in the image
// and in manifest annotations.
func BaseImageFields(osRelease *extension.Release) (*extension.Release, error) {
	rel := &extension.Release{}
	for _, k := range imageFields {
		v := osRelease.Get(k)
		if v == "" {
			continue
		}
		if err := extension.ValidateImageField(k, v); err != nil {
			return nil, fmt.Errorf("the base's os-release: %w: give --os and --version-id (or --os _any) to build without binding to the base", err)
		}
		rel.Set(k, v)
	}
	return rel, nil
}

// BindToBaseImage records the base's IMAGE_ID and IMAGE_VERSION (when its
// os-release has them) in the tree's
// usr/lib/extension-release.d/extension-release.NAME, so that they travel
// with the image; builder.Build keeps these fields and adds its own. A
// release file the image itself put there is kept and must agree. It
// returns the fields recorded (empty when the base has none); nothing is
// written then. The tree is a Prepare result, so every path is resolved
// inside it (an image's symlink cannot send the write elsewhere).
func BindToBaseImage(tree, name string, osRelease *extension.Release) (*extension.Release, error) {
	if err := extension.ValidateName(name); err != nil {
		return nil, err
	}
	fields, err := BaseImageFields(osRelease)
	if err != nil || len(fields.Keys()) == 0 {
		return fields, err
	}
	root, err := os.OpenRoot(tree)
	if err != nil {
		return nil, err
	}
	defer root.Close()
	p := extension.ReleasePath(name)
	rel := &extension.Release{}
	fi, err := root.Lstat(p)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("%s: %w", p, err)
	case !fi.Mode().IsRegular():
		return nil, fmt.Errorf("the image's %s is not a regular file: sysext reads only a regular extension-release file", p)
	default:
		f, err := root.Open(p)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		rel, err = osrelease.ReadOpen(f)
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("the image's %w", err)
		}
	}
	for _, k := range fields.Keys() {
		want := fields.Get(k)
		if have, ok := rel.Lookup(k); ok && have != want {
			return nil, fmt.Errorf("the image's %s sets %s=%s but its base has %s=%s: remove the file from the image or build with --os", p, k, have, k, want)
		}
		rel.Set(k, want)
	}
	if err := root.MkdirAll(path.Dir(p), 0o755); err != nil {
		return nil, fmt.Errorf("%s: %w", path.Dir(p), err)
	}
	if err := root.WriteFile(p, rel.Format(), 0o644); err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	return fields, nil
}
