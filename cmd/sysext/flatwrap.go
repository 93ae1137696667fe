package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/sysext/sysext/flix"
)

func init() { register("flatwrap", newFlatwrapCommand) }

// flatwrapOptions are the flags of `sysext flatwrap`.
type flatwrapOptions struct {
	packOptions
	Etc, Var, Home string
	ChrootDirs     []string
	HostDirs       []string
}

func newFlatwrapCommand() *cobra.Command {
	var opts flatwrapOptions
	c := &cobra.Command{
		Use:   "flatwrap ROOTFS NAME PATH[:DEST]... --version VERSION",
		Short: "Make an extension that runs programs inside a copy of their rootfs",
		Long: `Pack ROOTFS whole as the extension NAME, in /usr/lib/sysext-flatwrap/NAME/,
and write for each PATH (inside ROOTFS) a /bin/sh wrapper at its /usr path
(or DEST) that runs it inside that root. Any program works, scripts too.

The program sees the root's own directories, with these from the host:
--host-dirs (default /dev /proc /sys /run /tmp /var/tmp), and /etc, /var and
/home (with /root) unless --etc, --var or --home say chroot. --chroot-dirs
(default /usr /lib /lib64 /bin /sbin) lists directories that must stay the
root's; naming one of them as a host directory is an error.

The wrapper enters the root with bwrap when it is installed and works,
else with unshare when run as root, else with unshare in an unprivileged
user namespace, and says so clearly when none works (exit 126). Arguments,
stdin/stdout/stderr, the exit status and the working directory (when the
program can see it; / otherwise) pass through. SYSEXT_FLATWRAP_METHOD=
bwrap|unshare|userns forces one way. The image's Env (from ROOTFS.config.json,
written by 'sysext rootfs') gives defaults for the environment.

A program missing or not executable is a failure (1); no image is written.`,
		Example: `  sysext rootfs docker.io/library/alpine:3.20 ./alpine --run 'apk add -U htop'
  sysext flatwrap ./alpine htop /usr/bin/htop --version 3.3.0
  sysext flatwrap ./debian tools /bin/bash:/usr/bin/bash-debian --etc chroot --version 1`,
		Args: argsUsage(cobra.MinimumNArgs(3)),
		RunE: func(c *cobra.Command, args []string) error {
			return runFlatwrap(c, opts, args)
		},
	}
	opts.packOptions.AddFlags(c)
	f := c.Flags()
	f.StringVar(&opts.Etc, "etc", flix.FromHost, "where /etc comes from: host or chroot")
	f.StringVar(&opts.Var, "var", flix.FromHost, "where /var comes from: host or chroot")
	f.StringVar(&opts.Home, "home", flix.FromHost, "where /home and /root come from: host or chroot")
	f.StringSliceVar(&opts.ChrootDirs, "chroot-dirs", flix.DefaultChrootDirs, "directories that stay the root's (comma-separated)")
	f.StringSliceVar(&opts.HostDirs, "host-dirs", flix.DefaultHostDirs, "directories bound from the host (comma-separated)")
	return c
}

func runFlatwrap(c *cobra.Command, o flatwrapOptions, args []string) error {
	fo, bo, err := o.packInputs(args)
	if err != nil {
		return err
	}
	fo.Stderr = c.ErrOrStderr()
	fo.Wrap = flix.WrapOptions{Etc: o.Etc, Var: o.Var, Home: o.Home, ChrootDirs: o.ChrootDirs, HostDirs: o.HostDirs}
	if _, err := fo.Wrap.HostBinds(); err != nil {
		return usageError("%v", err)
	}
	progressTo(c, o.buildOptions, &bo)
	res, err := flix.Flatwrap(c.Context(), fo, bo)
	if err != nil {
		return fmt.Errorf("flatwrap %s: %w", fo.Name, err)
	}
	return printBuilt(c, o.buildOptions, res)
}
