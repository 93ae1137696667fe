package main

import (
	"context"

	"github.com/spf13/cobra"

	"github.com/sysext/sysext/extension"
	"github.com/sysext/sysext/node"
)

func init() { register("sync", newSyncCommand) }

type syncOptions struct {
	nodeFlags
	Offline bool
	DryRun  bool
}

func newSyncCommand() *cobra.Command {
	var opts syncOptions
	c := &cobra.Command{
		Use:   "sync [NAME...] [--offline] [--dry-run]",
		Short: "Make the installed extensions equal to the declared set",
		Long: `Read the declared extensions (/etc/sysext/extensions.d/*.conf and
/usr/lib/sysext/extensions.d/*.conf under --root; a file in /etc replaces the
one of the same name in /usr/lib, an empty one masks it):

  [Extension]
  Name=docker
  Source=ghcr.io/acme/sysext/docker:24-{ID}-{VERSION_ID}
  Policy=/etc/sysext/policy.json

{ID}, {VERSION_ID}, {VERSION_CODENAME}, {SYSEXT_LEVEL} come from the os-release
of --root, {ARCHITECTURE} is the node's (x86-64, arm64, ...). sync pulls what
is missing, updates what moved, and removes extensions that were installed
from a declaration that is gone. Extensions pulled by hand are kept, and
files sysext did not install are never touched. --offline does no network
I/O (used at boot before the network is up). With NAMEs, only those
extensions are synced (each declared, or installed from a declaration
that is gone); --dry-run checks everything but writes nothing.

` + updateExitDoc,
		RunE: func(c *cobra.Command, args []string) error {
			for _, name := range args {
				if err := extension.ValidateName(name); err != nil {
					return err
				}
			}
			return runSync(c.Context(), c, opts, args)
		},
	}
	opts.nodeFlags.addFlags(c, true, true)
	c.Flags().BoolVar(&opts.Offline, "offline", false, "no network: only remove what is no longer declared and report what needs a download")
	c.Flags().BoolVar(&opts.DryRun, "dry-run", false, "only say what would change")
	return c
}

func runSync(ctx context.Context, c *cobra.Command, opts syncOptions, names []string) error {
	n, err := opts.node(c, false)
	if err != nil {
		return err
	}
	rs, err := n.Sync(ctx, node.SyncOptions{Offline: opts.Offline, DryRun: opts.DryRun, Names: names})
	return opts.finishResults(c, rs, err, "no extension is declared (in /etc/sysext/extensions.d or /usr/lib/sysext/extensions.d) or installed")
}
