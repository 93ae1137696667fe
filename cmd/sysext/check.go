package main

import (
	"context"

	"github.com/spf13/cobra"

	"github.com/sysext/sysext/internal/osrelease"
	"github.com/sysext/sysext/node"
)

func init() { register("check", newCheckCommand) }

type checkOptions struct {
	nodeFlags
	OSRelease string
	Preflight bool
	Strict    bool
}

func newCheckCommand() *cobra.Command {
	var opts checkOptions
	c := &cobra.Command{
		Use:   "check --os-release FILE | --preflight [--strict] [IMAGE.raw...]",
		Short: "Tell whether every installed or declared extension has a build for an OS",
		Long: `For every installed or declared extension, resolve its source (declared
sources are expanded with FILE's {ID}, {VERSION_ID}, ...) and decide from the
registry's manifests alone, without downloading, whether a build exists that
systemd-sysext would merge on the OS that FILE describes. Gate an OS upgrade
on it: 'sysext check --os-release /path/to/new/usr/lib/os-release && bootc upgrade --apply'.

With --preflight, check instead whether this system can merge the given
image files (or every installed extension), as 'sysext status --preflight'.

Exits 0 when every extension has a compatible build, 1 when one is missing
(each is listed with the reason), 3 when nothing is installed or declared,
4 when the preflight refuses.`,
		RunE: func(c *cobra.Command, args []string) error {
			if opts.Preflight {
				if opts.OSRelease != "" {
					return usageError("give --os-release or --preflight, not both")
				}
				return runPreflight(c.Context(), c.OutOrStdout(), c.ErrOrStderr(), opts.nodeFlags, opts.Strict, args)
			}
			if len(args) > 0 {
				return usageError("image arguments are only taken with --preflight")
			}
			if opts.Strict {
				return usageError("--strict is only taken with --preflight")
			}
			if opts.OSRelease == "" {
				return usageError("--os-release FILE is required: the os-release of the OS to check against")
			}
			return runCheck(c.Context(), c, opts)
		},
	}
	opts.nodeFlags.addFlags(c, false, false)
	opts.registryFlags.addFlags(c)
	c.Flags().StringVar(&opts.OSRelease, "os-release", "", "the os-release `FILE` of the OS to check against")
	c.Flags().BoolVar(&opts.Preflight, "preflight", false, "check whether this system can merge extensions (kernel, overlay stacking, systemd)")
	c.Flags().BoolVar(&opts.Strict, "strict", false, "with --preflight: refuse on warnings too")
	return c
}

func runCheck(ctx context.Context, c *cobra.Command, opts checkOptions) error {
	osr, err := osrelease.ReadFile(opts.OSRelease)
	if err != nil {
		return usageError("--os-release: %v", err)
	}
	n, err := opts.node(c, false)
	if err != nil {
		return err
	}
	rs, err := n.Check(ctx, osr, opts.OSRelease)
	if opts.JSON {
		if rs == nil {
			rs = []node.CheckResult{}
		}
		if jerr := printJSON(c.OutOrStdout(), rs); jerr != nil {
			return jerr
		}
	} else if !opts.Quiet {
		for _, r := range rs {
			if r.OK {
				printf(c.OutOrStdout(), "%s: ok, %s (%s)\n", r.Name, r.Version, r.Source)
			} else {
				printf(c.OutOrStdout(), "%s: MISSING: %s\n", r.Name, r.Reason)
			}
		}
	}
	if err == nil && len(rs) == 0 {
		return nothingToDo("no extension is installed or declared")
	}
	return err
}
