package fromimage

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/sysext/sysext/builder"
)

// BuildOptions say what Build builds: `sysext build --from-image`.
type BuildOptions struct {
	// Options say what to take from the image. ConfextTree is Build's own;
	// with BaseOSRelease the extension is bound to the base: its ID and
	// VERSION_ID, and its IMAGE_ID/IMAGE_VERSION (BindToBaseImage).
	Options
	// Build is the extension's build, checked by the caller
	// (builder.CheckOptions). Build sets Tree and StageDir; with
	// BaseOSRelease it replaces Meta's ID, VERSION_ID and SYSEXT_LEVEL.
	Build builder.Options
	// Confext, when set, is the file what the image adds under /etc is
	// written to, as a confext bound like the extension.
	Confext string
	// Progress, when set, is told what the image gave, a line at a time:
	// progress, not a result (a quiet caller drops it).
	Progress func(line string)
	// Notice, when set, is told what a person should read even when quiet:
	// a fallback taken, base files whose deletion is ignored.
	Notice func(line string)
}

// BuildResult is what Build wrote.
type BuildResult struct {
	Image *builder.Result // the extension
	From  *Result         // what the image gave, and what was left out
	// Confext is the confext written, "" when none was asked for or the
	// image adds nothing under /etc; ConfextFiles counts its files.
	Confext      string
	ConfextFiles int
}

// Build builds an extension (and, with Confext, a confext) from what a
// container image adds to its base. It resolves both images, extracts the
// added files where files are cheap to create (ScratchParent: tmpfs when it
// has room, else next to the output, where it extracts again if tmpfs
// fills up), binds the extension to the base when asked, and builds. The
// extracted trees are removed on return; on error no image is left.
func Build(ctx context.Context, o BuildOptions) (*BuildResult, error) {
	progress, notice := orNothing(o.Progress), orNothing(o.Notice)
	bo := o.Build
	if o.Confext != "" && !bo.Force {
		if _, err := os.Stat(o.Confext); err == nil {
			return nil, fmt.Errorf("%s already exists: use --force to replace it", o.Confext)
		}
	}
	plan, err := NewPlan(ctx, o.Options)
	if err != nil {
		return nil, err
	}
	outDir := "."
	if bo.Output != "" {
		outDir = bo.Output
		if fi, err := os.Stat(bo.Output); err != nil || !fi.IsDir() {
			outDir = filepath.Dir(bo.Output)
		}
	}
	// The tree is extracted where files are cheap to create, read once by
	// the build and removed.
	scratch := ScratchParent(outDir, plan.DownloadSize())
	fo := o.Options
	tree, res, err := prepareTree(ctx, plan, scratch, &fo, o.Confext != "")
	if err != nil && scratch != outDir && errors.Is(err, syscall.ENOSPC) {
		notice(fmt.Sprintf("%s ran out of space for the image's files: extracting again in %s", scratch, outDir))
		scratch = outDir
		tree, res, err = prepareTree(ctx, plan, scratch, &fo, o.Confext != "")
	}
	defer func() {
		if tree != "" {
			os.RemoveAll(tree)
		}
		if fo.ConfextTree != "" {
			os.RemoveAll(fo.ConfextTree)
		}
	}()
	if err != nil {
		return nil, err
	}
	name := o.Image.Name
	switch res.Mode {
	case ByLayers:
		progress(fmt.Sprintf("%s shares %d layers with its base: took the %d above them", name, res.SharedLayers, res.AddedLayers))
	case ByFiles:
		progress(fmt.Sprintf("%s shares no layers with its base: took the files that differ", name))
	}
	progress(res.Summary())
	if len(res.Deletions) > 0 {
		notice("warning: ignored deletions of base files: " + strings.Join(res.Deletions, ", "))
	}
	if o.BaseOSRelease {
		id, vid := res.OSRelease.Get("ID"), res.OSRelease.Get("VERSION_ID")
		if id == "" || vid == "" {
			return nil, fmt.Errorf("the base's os-release has no ID or VERSION_ID to bind the extension to: give --os and --version-id (or --os _any)")
		}
		bo.Meta.ID, bo.Meta.VersionID, bo.Meta.SysextLevel = id, vid, ""
		msg := fmt.Sprintf("bound to the base: ID=%s VERSION_ID=%s", id, vid)
		// IMAGE_ID/IMAGE_VERSION go into the extension-release (push
		// records them as annotations).
		image, err := BindToBaseImage(tree, bo.Meta.Name, res.OSRelease)
		if err != nil {
			return nil, err
		}
		for _, k := range image.Keys() {
			msg += " " + k + "=" + image.Get(k)
		}
		progress(msg)
	}
	bo.Tree = tree
	bo.StageDir = scratch // EROFS links the tree's files on the tree's filesystem
	out := &BuildResult{From: res}
	if fo.ConfextTree != "" {
		if res.Kept["etc"] == 0 {
			progress("the image adds nothing under /etc: no confext written")
		} else {
			if err := WriteConfext(ctx, fo.ConfextTree, o.Confext, bo.Meta, bo.SourceDateEpoch, bo.Force); err != nil {
				return nil, err
			}
			out.Confext, out.ConfextFiles = o.Confext, res.Kept["etc"]
		}
	}
	if out.Image, err = builder.Build(ctx, bo); err != nil {
		if out.Confext != "" {
			os.Remove(out.Confext) // nothing half-done
		}
		return nil, err
	}
	return out, nil
}

func orNothing(f func(string)) func(string) {
	if f == nil {
		return func(string) {}
	}
	return f
}

// prepareTree extracts plan's files into a new tree under scratch (and,
// with confext, etc/ into fo.ConfextTree there too: Prepare moves them, so
// both must be on scratch's filesystem). On error it removes what it made
// and returns "".
func prepareTree(ctx context.Context, plan *Plan, scratch string, fo *Options, confext bool) (string, *Result, error) {
	tree, err := os.MkdirTemp(scratch, ".#from-image-")
	if err != nil {
		return "", nil, err
	}
	fail := func(err error) (string, *Result, error) {
		os.RemoveAll(tree)
		if fo.ConfextTree != "" {
			os.RemoveAll(fo.ConfextTree)
			fo.ConfextTree = ""
		}
		return "", nil, err
	}
	if err := os.Chmod(tree, 0o755); err != nil {
		return fail(err)
	}
	if confext {
		if fo.ConfextTree, err = os.MkdirTemp(scratch, ".#confext-"); err != nil {
			return fail(err)
		}
	}
	res, err := plan.Prepare(ctx, tree, fo.ConfextTree)
	if err != nil {
		return fail(err)
	}
	return tree, res, nil
}
