package node

import (
	"context"
	"errors"
	"fmt"

	"github.com/sysext/sysext/activate"
	"github.com/sysext/sysext/fsimage"
	"github.com/sysext/sysext/store"
)

// PreflightResult is what CheckPreflight found.
type PreflightResult struct {
	Report   *activate.Report
	Checked  int      // how many images were judged
	Warnings []string // installed images that could not be read
}

// CheckPreflight runs activate's preflight (`status --preflight`, `check
// --preflight`) on the given image files, or, when none is given, on every
// installed extension's active image under so.Root; it writes nothing. A
// given file that cannot be read is an error; an installed image that
// cannot be read is left out and named in the warnings.
func CheckPreflight(ctx context.Context, so store.Options, files []string, strict bool) (*PreflightResult, error) {
	images, warnings := preflightImages(ctx, so, files)
	if len(files) > 0 && len(warnings) > 0 {
		return nil, errors.New(warnings[0])
	}
	rep := activate.Check(ctx, activate.System{Root: so.Root}, images, strict)
	return &PreflightResult{Report: rep, Checked: len(images), Warnings: warnings}, nil
}

// preflightImages reads the format and metadata of the given files, or of
// every installed extension's active image.
func preflightImages(ctx context.Context, so store.Options, files []string) ([]activate.Image, []string) {
	var images []activate.Image
	var warnings []string
	add := func(path string) {
		info, err := fsimage.OpenMetadata(ctx, path)
		if err != nil {
			warnings = append(warnings, err.Error())
			return
		}
		images = append(images, activate.Image{Name: info.Name, Format: info.Format, Compression: info.Compression, Meta: info.Meta, Verity: imageVerity(info)})
	}
	if len(files) > 0 {
		for _, p := range files {
			add(p)
		}
		return images, warnings
	}
	so.ReadOnly = true
	s, err := store.Open(ctx, so)
	if err != nil {
		return nil, []string{fmt.Sprintf("installed extensions not checked: %v", err)}
	}
	defer s.Close()
	st := s.State()
	for _, name := range st.Names() {
		if e := st.Extensions[name]; e.Active.File != "" {
			add(s.ImagePath(name, e.Active.File))
		}
	}
	return images, warnings
}

// imageVerity is what the preflight needs of a disk image file.
func imageVerity(info *fsimage.Info) *activate.ImageVerity {
	if info.DDI == nil || info.DDI.RootHash == "" {
		return nil
	}
	return &activate.ImageVerity{RootHash: info.DDI.RootHash, Signed: info.DDI.SignaturePartition() != nil}
}
