package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/sysext/sysext/builder"
	"github.com/sysext/sysext/extension"
	"github.com/sysext/sysext/flix"
)

func init() { register("flix", newFlixCommand) }

// packOptions are the flags flix and flatwrap share with `sysext build`
// (the same fields, so builderOptions checks them the same way).
type packOptions struct {
	buildOptions
}

func (o *packOptions) AddFlags(c *cobra.Command) {
	o.addImageFlags(c,
		"architecture of the programs, in systemd's naming (x86-64, arm64, ...) or an OCI or uname name (default: the host's)",
		"compression, as for 'sysext build' (default zstd / lz4hc)")
	c.Flags().Lookup("keep-privileges").Usage = "keep the set-user-ID/set-group-ID bits and file capabilities of this program, `PATH` in ROOTFS (every other file loses them: the image is all-root); repeatable"
}

// packInputs checks ROOTFS NAME PATH... and the build flags.
func (o *packOptions) packInputs(args []string) (flix.Options, builder.Options, error) {
	o.Name = args[1]
	var fo flix.Options
	bo, err := o.builderOptions("")
	if err != nil {
		return fo, bo, err
	}
	// Paths to keep privileges name files of ROOTFS: flix and flatwrap
	// know where those land in the image.
	fo = flix.Options{Rootfs: args[0], Name: args[1], Arch: bo.Meta.Arch, KeepPrivileges: o.KeepPrivileges}
	bo.KeepPrivileges = nil
	if bo.Meta.Arch == extension.AnyArch {
		return fo, bo, usageError("--arch _any: programs are built for one architecture; name it")
	}
	for _, a := range args[2:] {
		p, err := flix.ParseProgram(a)
		if err != nil {
			return fo, bo, usageError("%v", err)
		}
		fo.Programs = append(fo.Programs, p)
	}
	return fo, bo, nil
}

// flixOptions are the flags of `sysext flix`.
type flixOptions struct {
	packOptions
	ExtraLibs []string
}

func newFlixCommand() *cobra.Command {
	var opts flixOptions
	c := &cobra.Command{
		Use:   "flix ROOTFS NAME PATH[:DEST]... --version VERSION",
		Short: "Make an extension of programs from a rootfs, with their own loader and libraries",
		Long: `Pack programs from ROOTFS (for example a tree made by 'sysext rootfs') as the
extension NAME. Each PATH (inside ROOTFS) is copied to its /usr path, or to
DEST when given (needed when PATH is not under /usr or /opt). Its ELF loader
and every library it needs, found recursively inside ROOTFS as its loader
would (RPATH/RUNPATH with $ORIGIN, ROOTFS's ld.so.conf and its includes,
musl's path file, the multiarch, lib64 and lib directories), are copied into
/usr/lib/sysext-flix/NAME/, and patchelf points the programs' interpreter
and search path (DT_RPATH) there and gives every library a RUNPATH of
$ORIGIN: nothing is looked up in the host's libraries.

A symlinked program stays a link to its patched target. Static programs are
copied as they are. Scripts are refused: 'sysext flatwrap' runs them in
their own root. Libraries opened with dlopen must be named with --extra-lib
(a path inside ROOTFS, or a name to look up).

Needs patchelf, and mksquashfs or mkfs.erofs.

Not an ELF program, a missing library or another architecture is a
failure (1); no image is written.`,
		Example: `  sysext rootfs docker.io/library/alpine:3.20 ./alpine --run 'apk add -U b3sum'
  sysext flix ./alpine b3sum /usr/bin/b3sum --version 1.5
  sysext flix ./rootfs busybox /bin/busybox:/usr/bin/busybox --version 1.36 -o out/`,
		Args: argsUsage(cobra.MinimumNArgs(3)),
		RunE: func(c *cobra.Command, args []string) error {
			return runFlix(c, opts, args)
		},
	}
	opts.packOptions.AddFlags(c)
	c.Flags().StringArrayVar(&opts.ExtraLibs, "extra-lib", nil, "also bundle this library (a path inside ROOTFS or a library name), for dlopen; repeatable")
	return c
}

func runFlix(c *cobra.Command, o flixOptions, args []string) error {
	fo, bo, err := o.packInputs(args)
	if err != nil {
		return err
	}
	fo.ExtraLibs = o.ExtraLibs
	fo.Stderr = c.ErrOrStderr()
	progressTo(c, o.buildOptions, &bo)
	res, err := flix.Flix(c.Context(), fo, bo)
	if err != nil {
		return fmt.Errorf("flix %s: %w", fo.Name, err)
	}
	return printBuilt(c, o.buildOptions, res)
}
