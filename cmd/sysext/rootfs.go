package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/sysext/sysext/extension"
	"github.com/sysext/sysext/flix"
	"github.com/sysext/sysext/oci"
)

func init() { register("rootfs", newRootfsCommand) }

// rootfsOptions are the flags of `sysext rootfs`.
type rootfsOptions struct {
	Platform string
	Run      string
	MaxSize  sizeFlag
	registryFlags
}

func (o *rootfsOptions) AddFlags(c *cobra.Command) {
	c.Flags().StringVar(&o.Platform, "platform", "", "platform to pick from a multi-platform image, as linux/arm64 or arm64 (default: the host's)")
	c.Flags().StringVar(&o.Run, "run", "", "shell command to run inside the tree before it is put in place (chroot with /proc, /dev and the host's resolv.conf; needs root), e.g. 'apk add -U b3sum'")
	addMaxSizeFlag(c, &o.MaxSize, "images whose layers")
	o.registryFlags.addFlags(c)
}

func newRootfsCommand() *cobra.Command {
	var opts rootfsOptions
	c := &cobra.Command{
		Use:   "rootfs REF DIR",
		Short: "Write a container image's root filesystem to a directory, without docker",
		Long: `Write the root filesystem of the container image REF (host/repo:tag,
@sha256:..., or oci:PATH[:tag] for an OCI image layout) into DIR, which must
not exist or be empty: every layer in order (gzip, zstd or plain tar),
whiteouts and opaque directories, modes, ownership (as root), xattrs where
the filesystem takes them, hard links and symlinks.

Untrusted content stays inside DIR: entries that climb out with '..', that
are absolute, or that go through a symlink leading above DIR are refused;
device nodes are skipped unless run as root; every layer's digest (and
diff ID) is checked as it streams. What the layers unpack to is bounded
(--max-size; by default a share of the free space), and sparse files stay
sparse. DIR's own mode is 0755, whatever the image says. The tree is built
next to DIR and renamed into place at the end, so a failure leaves nothing
behind.

The image config (entrypoint, env, user, ...) is kept in DIR.config.json,
which 'sysext flatwrap' reads.

An unreachable or refused image, a refused layer or --run failing is a
failure (1).`,
		Example: `  sysext rootfs docker.io/library/alpine:3.20 ./alpine
  sysext rootfs ghcr.io/acme/tool:1.2 ./tool --platform linux/arm64
  sysext rootfs docker.io/library/alpine:3.20 ./alpine --run 'apk add -U b3sum'
  sysext flix ./alpine b3sum /usr/bin/b3sum --version 1.5`,
		Args: argsUsage(cobra.ExactArgs(2)),
		RunE: func(c *cobra.Command, args []string) error {
			return runRootfs(c, opts, args[0], args[1])
		},
	}
	opts.AddFlags(c)
	return c
}

func runRootfs(c *cobra.Command, o rootfsOptions, refStr, dir string) error {
	var arch extension.Arch
	if o.Platform != "" {
		a, err := extension.ParseArch(o.Platform)
		if err != nil {
			return usageError("--platform: %v", err)
		}
		arch = a
	}
	ctx := c.Context()
	ref, t, err := openReference(ctx, refStr, o.registryFlags, false)
	if err != nil {
		return err
	}
	desc, err := oci.ResolveRoot(ctx, t, ref)
	if err != nil {
		return err
	}
	res, err := flix.Rootfs(ctx, t, desc, dir, flix.RootfsOptions{
		Arch: arch, Run: o.Run, Stdout: c.OutOrStdout(), Stderr: c.ErrOrStderr(), MaxSize: int64(o.MaxSize),
	})
	if err != nil {
		return oci.Explain(ref, fmt.Errorf("%s: %w", ref, err))
	}
	if n := res.Stats.SkippedDevices; n > 0 {
		fmt.Fprintf(c.ErrOrStderr(), "sysext: skipped %d device nodes (not root)\n", n)
	}
	if n := res.Stats.XattrErrors; n > 0 {
		fmt.Fprintf(c.ErrOrStderr(), "sysext: the filesystem refused %d extended attributes\n", n)
	}
	fmt.Fprintf(c.OutOrStdout(), "wrote %s (%d layers of %s), image config in %s\n",
		res.Dir, len(res.Image.Manifest.Layers), res.Image.Descriptor.Digest, res.ConfigFile)
	return nil
}
