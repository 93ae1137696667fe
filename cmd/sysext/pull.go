package main

import (
	"context"

	"github.com/spf13/cobra"

	"github.com/sysext/sysext/node"
	"github.com/sysext/sysext/store"
)

func init() { register("pull", newPullCommand) }

type pullOptions struct {
	nodeFlags
	Name string
	Copy bool
}

func newPullCommand() *cobra.Command {
	var opts pullOptions
	c := &cobra.Command{
		Use:   "pull REF [--name NAME] [--key K | --policy P] [--no-refresh]",
		Short: "Resolve, verify, check, store and activate an extension",
		Long: `Resolve REF (host/repo:tag, ...@sha256:..., oci:DIR[:tag]), pick the build
for this architecture, verify its signature against the trust policy, check
from the manifest alone that it merges on this OS (the os-release of --root),
download it into the store (/var/lib/sysext/store/NAME/) (when the store
holds images, only the parts of the new one it cannot find in them: a delta
download, off with --no-delta; any failure of it downloads the whole image),
check the image's own metadata, switch the activation link /var/lib/extensions/NAME.raw, and
refresh systemd-sysext (not with --root or --no-refresh). Pulling what is
already active changes nothing. An extension of that name that sysext did not
install is never touched.

Baking into an OS image: --root DIR --extensions-dir /usr/lib/extensions
--copy writes NAME.raw itself, with no link and no state in /var.`,
		Args: argsUsage(cobra.ExactArgs(1)),
		RunE: func(c *cobra.Command, args []string) error {
			return runPull(c.Context(), c, opts, args)
		},
	}
	opts.nodeFlags.addFlags(c, true, true)
	c.Flags().StringVar(&opts.Name, "name", "", "the extension's name (required for artifacts without sysext annotations)")
	c.Flags().BoolVar(&opts.Copy, "copy", false, "write the image file itself into --extensions-dir (baking an OS image)")
	return c
}

func runPull(ctx context.Context, c *cobra.Command, opts pullOptions, args []string) error {
	n, err := opts.node(c, opts.Copy)
	if err != nil {
		return err
	}
	r, err := n.Pull(ctx, node.PullRequest{Ref: args[0], Name: opts.Name, Trust: store.TrustOf(opts.trust()), AllowUnsigned: opts.AllowUnsigned})
	return opts.finishResult(c, r, err, !opts.Quiet || err == nil)
}
