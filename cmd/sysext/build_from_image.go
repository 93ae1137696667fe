package main

// `sysext build --from-image REF [--base REF]`: the tree comes from what a
// container build added to its base (package fromimage), then the build
// goes on exactly like `sysext build TREE`.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/sysext/sysext/extension"
	"github.com/sysext/sysext/fromimage"
	"github.com/sysext/sysext/oci"
)

func runBuildFromImage(c *cobra.Command, opts buildOptions, img fromImageOptions) error {
	if img.Confext != "" {
		if _, err := os.Stat(img.Confext); err == nil && !opts.Force {
			return fmt.Errorf("%s already exists: use --force to replace it", img.Confext)
		}
	}
	// Check every flag before any download.
	if _, err := opts.builderOptions("."); err != nil {
		return err
	}
	arch := extension.Arch("")
	if opts.Arch != "" {
		a, err := extension.ParseArch(opts.Arch)
		if err != nil {
			return usageError("--arch: %v", err)
		}
		arch = a
	}
	if img.Platform != "" {
		a, err := extension.ParseArch(img.Platform)
		if err != nil {
			return usageError("--platform: %v", err)
		}
		if arch != "" && a != arch {
			return usageError("--platform %s and --arch %s disagree: give one", img.Platform, opts.Arch)
		}
		arch = a
		opts.Arch = string(a)
	}
	if arch == extension.AnyArch {
		return usageError("--arch _any: a container image is for one platform; name it")
	}
	// Bound to the base by default: its ID and VERSION_ID, unless the user
	// said otherwise with --os (and its level or version).
	bind := img.Base != "" && !c.Flags().Changed("os")
	ctx := c.Context()
	iref, it, err := openReference(ctx, img.Image, registryFlags{}, false)
	if err != nil {
		return err
	}
	idesc, err := it.Resolve(ctx, iref.Reference())
	if err != nil {
		return oci.Explain(iref, fmt.Errorf("%s: resolve: %w", iref, err))
	}
	fo := fromimage.Options{
		Image: fromimage.Source{Fetcher: it, Desc: idesc, Name: iref.String()},
		Arch:  arch, Keep: img.Keep, IgnoreDeletions: img.IgnoreDeletions, BaseOSRelease: bind,
		MaxSize: int64(img.MaxSize),
	}
	if img.Base != "" {
		bref, bt, err := openReference(ctx, img.Base, registryFlags{}, false)
		if err != nil {
			return err
		}
		bdesc, err := bt.Resolve(ctx, bref.Reference())
		if err != nil {
			return oci.Explain(bref, fmt.Errorf("base %s: resolve: %w", bref, err))
		}
		fo.Base = fromimage.Source{Fetcher: bt, Desc: bdesc, Name: bref.String()}
	}
	plan, err := fromimage.NewPlan(ctx, fo)
	if err != nil {
		return err
	}
	outDir := "."
	if opts.Output != "" {
		outDir = opts.Output
		if fi, err := os.Stat(opts.Output); err != nil || !fi.IsDir() {
			outDir = filepath.Dir(opts.Output)
		}
	}
	// The tree is extracted where files are cheap to create (tmpfs when
	// it has room), read once by the build and removed.
	scratch := fromimage.ScratchParent(outDir, plan.DownloadSize())
	tree, res, err := prepareTree(ctx, plan, scratch, &fo, img.Confext != "")
	if err != nil && scratch != outDir && errors.Is(err, syscall.ENOSPC) {
		fmt.Fprintf(c.ErrOrStderr(), "sysext: %s ran out of space for the image's files: extracting again in %s\n", scratch, outDir)
		scratch = outDir
		tree, res, err = prepareTree(ctx, plan, scratch, &fo, img.Confext != "")
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
		return err
	}
	// What the image gave: progress, not a result (-q drops it).
	var w io.Writer = c.ErrOrStderr()
	if opts.Quiet {
		w = io.Discard
	}
	switch res.Mode {
	case fromimage.ByLayers:
		fmt.Fprintf(w, "sysext: %s shares %d layers with its base: took the %d above them\n", iref, res.SharedLayers, res.AddedLayers)
	case fromimage.ByFiles:
		fmt.Fprintf(w, "sysext: %s shares no layers with its base: took the files that differ\n", iref)
	}
	fmt.Fprintf(w, "sysext: %s\n", res.Summary())
	if len(res.Deletions) > 0 {
		fmt.Fprintf(c.ErrOrStderr(), "sysext: warning: ignored deletions of base files: %s\n", strings.Join(res.Deletions, ", "))
	}
	if bind {
		id, vid := res.OSRelease.Get("ID"), res.OSRelease.Get("VERSION_ID")
		if id == "" || vid == "" {
			return fmt.Errorf("the base's os-release has no ID or VERSION_ID to bind the extension to: give --os and --version-id (or --os _any)")
		}
		opts.OS, opts.VersionID, opts.SysextLevel = id, vid, ""
		msg := fmt.Sprintf("bound to the base: ID=%s VERSION_ID=%s", id, vid)
		// IMAGE_ID/IMAGE_VERSION go into the extension-release (push
		// records them as annotations).
		image, err := fromimage.BindToBaseImage(tree, opts.Name, res.OSRelease)
		if err != nil {
			return err
		}
		for _, k := range image.Keys() {
			msg += " " + k + "=" + image.Get(k)
		}
		fmt.Fprintf(w, "sysext: %s\n", msg)
	}
	bo, err := opts.builderOptions(tree)
	if err != nil {
		return err
	}
	bo.StageDir = scratch // EROFS links the tree's files on the tree's filesystem
	progressTo(c, opts, &bo)
	if fo.ConfextTree != "" {
		if res.Kept["etc"] == 0 {
			fmt.Fprintf(w, "sysext: the image adds nothing under /etc: no confext written\n")
		} else {
			if err := fromimage.WriteConfext(ctx, fo.ConfextTree, img.Confext, bo.Meta, bo.SourceDateEpoch, opts.Force); err != nil {
				return err
			}
			if err := printBuildResult(c, opts, bo); err != nil {
				os.Remove(img.Confext) // nothing half-done
				return err
			}
			fmt.Fprintf(w, "sysext: wrote the confext %s (%d files under /etc)\n", img.Confext, res.Kept["etc"])
			return nil
		}
	}
	return printBuildResult(c, opts, bo)
}

// prepareTree extracts plan's files into a new tree under scratch (and,
// with confext, etc/ into fo.ConfextTree there too: Prepare moves them, so
// both must be on scratch's filesystem). On error it removes what it made
// and returns "".
func prepareTree(ctx context.Context, plan *fromimage.Plan, scratch string, fo *fromimage.Options, confext bool) (string, *fromimage.Result, error) {
	tree, err := os.MkdirTemp(scratch, ".#from-image-")
	if err != nil {
		return "", nil, err
	}
	fail := func(err error) (string, *fromimage.Result, error) {
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
