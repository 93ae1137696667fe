package main

// `sysext build --from-image REF [--base REF]`: the tree comes from what a
// container build added to its base (fromimage.Build), then the build goes
// on exactly like `sysext build TREE`.

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/sysext/sysext/extension"
	"github.com/sysext/sysext/fromimage"
	"github.com/sysext/sysext/oci"
)

func runBuildFromImage(c *cobra.Command, opts buildOptions, img fromImageOptions) error {
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
	bo, err := opts.builderOptions("")
	if err != nil {
		return err
	}
	progressTo(c, opts, &bo)
	ctx := c.Context()
	image, err := openSource(ctx, img.Image)
	if err != nil {
		return err
	}
	fo := fromimage.BuildOptions{
		Options: fromimage.Options{
			Image: image, Arch: arch, Keep: img.Keep, IgnoreDeletions: img.IgnoreDeletions, MaxSize: int64(img.MaxSize),
			// Bound to the base by default: its ID and VERSION_ID, unless
			// the user said otherwise with --os (and its level or version).
			BaseOSRelease: img.Base != "" && !c.Flags().Changed("os"),
		},
		Build:   bo,
		Confext: img.Confext,
		Notice:  func(line string) { fmt.Fprintf(c.ErrOrStderr(), "sysext: %s\n", line) },
	}
	if !opts.Quiet { // what the image gave: progress, not a result
		fo.Progress = func(line string) { fmt.Fprintf(c.ErrOrStderr(), "sysext: %s\n", line) }
	}
	if img.Base != "" {
		if fo.Base, err = openSource(ctx, img.Base); err != nil {
			return fmt.Errorf("base: %w", err)
		}
	}
	res, err := fromimage.Build(ctx, fo)
	if err != nil {
		return err
	}
	if err := printBuilt(c, opts, res.Image); err != nil {
		return err
	}
	if res.Confext != "" && fo.Progress != nil {
		fo.Progress(fmt.Sprintf("wrote the confext %s (%d files under /etc)", res.Confext, res.ConfextFiles))
	}
	return nil
}

// openSource opens and resolves a container image reference for
// fromimage.
func openSource(ctx context.Context, s string) (fromimage.Source, error) {
	ref, t, err := openReference(ctx, s, registryFlags{}, false)
	if err != nil {
		return fromimage.Source{}, err
	}
	desc, err := oci.ResolveRoot(ctx, t, ref)
	if err != nil {
		return fromimage.Source{}, err
	}
	return fromimage.Source{Fetcher: t, Desc: desc, Name: ref.String()}, nil
}
