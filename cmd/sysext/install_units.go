package main

import (
	"fmt"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/sysext/sysext/node"
)

func init() { register("install-units", newInstallUnitsCommand) }

type installUnitsOptions struct {
	Root     string
	UnitDir  string
	Bin      string
	NoEnable bool
	Quiet    bool
}

func newInstallUnitsCommand() *cobra.Command {
	var opts installUnitsOptions
	c := &cobra.Command{
		Use:   "install-units [--root DIR]",
		Short: "Install and enable sysext's systemd units (update timer, boot-time sync)",
		Long: `Write sysext-update.service and sysext-update.timer (daily, randomized delay),
sysext-sync.service (at boot, offline, before systemd-sysext.service) and
sysext-sync-online.service (after the network, downloads what the declared
set still needs) into --unit-dir under --root, and enable them by linking
them into their targets' .wants directories. systemd is not contacted: run
'systemctl daemon-reload' on a running system, or bake them into an image
with --root.`,
		Args: argsUsage(cobra.NoArgs),
		RunE: func(c *cobra.Command, args []string) error {
			root, err := filepath.Abs(opts.Root)
			if err != nil {
				return usageError("--root: %v", err)
			}
			written, err := node.InstallUnits(root, opts.UnitDir, opts.Bin, !opts.NoEnable)
			if !opts.Quiet {
				for _, p := range written {
					fmt.Fprintln(c.OutOrStdout(), p)
				}
			}
			return err
		},
	}
	c.Flags().StringVar(&opts.Root, "root", "/", "install into the OS tree at `DIR`")
	c.Flags().StringVar(&opts.UnitDir, "unit-dir", "/etc/systemd/system", "unit directory inside --root (/usr/lib/systemd/system for OS images)")
	c.Flags().StringVar(&opts.Bin, "bin", "/usr/local/bin/sysext", "path of the sysext binary on the target system")
	c.Flags().BoolVar(&opts.NoEnable, "no-enable", false, "only write the units")
	c.Flags().BoolVarP(&opts.Quiet, "quiet", "q", false, "print nothing")
	return c
}
