package main

import (
	"context"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/sysext/sysext/activate"
	"github.com/sysext/sysext/node"
)

func init() { register("status", newStatusCommand) }

type statusOptions struct {
	nodeFlags
	Preflight bool
	Strict    bool
}

func newStatusCommand() *cobra.Command {
	var opts statusOptions
	c := &cobra.Command{
		Use:   "status [--preflight [--strict] [IMAGE.raw...]]",
		Short: "Show sysext's view of the extensions next to systemd-sysext's, and flag differences",
		Long: `Show, for every extension, what sysext installed (active version, activation
status: proven, pending, unproven, rolled-back or failed, with the reason),
which file systemd-sysext will pick from its extension directories, and what
systemd-sysext has merged now (only on the running system; with --root only
the first two). Every difference between these views is flagged with the way
to repair it.

With --preflight, check instead whether extensions can merge on this system:
the kernel can mount their filesystem, overlayfs is available, /usr is not
already stacked too deep on overlays (composefs, transient root or /etc), and
the target root's systemd is new enough for their features. It checks the
given image files, or every installed extension. Problems are warnings;
--strict refuses on them.

Exits 0 when the views agree (or the preflight passes), 5 when differences
are flagged, 4 when the preflight refuses.`,
		Args: func(c *cobra.Command, args []string) error {
			if len(args) > 0 && !opts.Preflight {
				return usageError("image arguments are only taken with --preflight (see 'sysext status --help')")
			}
			if opts.Strict && !opts.Preflight {
				return usageError("--strict is only taken with --preflight")
			}
			return nil
		},
		RunE: func(c *cobra.Command, args []string) error {
			if opts.Preflight {
				return runPreflight(c.Context(), c.OutOrStdout(), c.ErrOrStderr(), opts.nodeFlags, opts.Strict, args)
			}
			return runStatus(c.Context(), c.OutOrStdout(), opts)
		},
	}
	opts.nodeFlags.addFlags(c, false, false)
	c.Flags().BoolVar(&opts.Preflight, "preflight", false, "check whether extensions can merge on this system (see above)")
	c.Flags().BoolVar(&opts.Strict, "strict", false, "with --preflight: refuse on warnings too (a stacked /usr, an old systemd)")
	return c
}

func runStatus(ctx context.Context, w io.Writer, opts statusOptions) error {
	so, err := opts.storeOptions(false)
	if err != nil {
		return err
	}
	rep, err := node.ReadStatus(ctx, node.StatusOptions{Store: so, AskSystemd: so.RunningSystem()})
	if err != nil {
		return err
	}
	if opts.JSON {
		if err := printJSON(w, rep); err != nil {
			return err
		}
	} else {
		printStatus(w, rep, opts.Quiet)
	}
	if n := rep.Differences(); n > 0 {
		return withExit(exitDiffers, fmt.Errorf("%d difference(s) flagged (see above)", n))
	}
	return nil
}

func printStatus(w io.Writer, rep *node.StatusReport, quiet bool) {
	for _, e := range rep.Errors {
		printf(w, "warning: %s\n", e)
	}
	if len(rep.Extensions) == 0 {
		if !quiet {
			printLine(w, "no extensions installed, linked or merged")
		}
		return
	}
	merged := "MERGED"
	if !rep.Online {
		merged = "MERGED (not asked: --root)"
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	printf(tw, "NAME\tACTIVE\tACTIVATION\tUSED BY SYSTEMD-SYSEXT\t%s\n", merged)
	for _, e := range rep.Extensions {
		active, act := dash(e.Active), dash(string(e.Activation))
		if !e.Installed {
			active, act = "(not sysext's)", "-"
		}
		m := "-"
		switch {
		case !rep.Online:
		case e.Merged && e.MergedVersion != "":
			m = e.MergedVersion
		case e.Merged:
			m = "yes"
		default:
			m = "no"
		}
		printf(tw, "%s\t%s\t%s\t%s\t%s\n", e.Name, active, act, dash(e.Path), m)
	}
	tw.Flush()
	printVerityStatus(w, rep)
	if !quiet {
		for _, e := range rep.Extensions {
			for _, n := range e.Notes {
				printf(w, "note: %s\n", n)
			}
		}
	}
	n := rep.Differences()
	if n == 0 {
		if !quiet {
			printLine(w, "sysext's view and systemd-sysext's agree")
		}
		return
	}
	printLine(w, "Differences:")
	for _, e := range rep.Extensions {
		for _, d := range e.Differences {
			printf(w, "  %s: %s\n", e.Name, d)
		}
	}
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// runPreflight prints activate's preflight for the given image files, or
// for every installed extension when none is given; `sysext check
// --preflight` can call it as it is.
func runPreflight(ctx context.Context, w, errw io.Writer, f nodeFlags, strict bool, files []string) error {
	so, err := f.storeOptions(false)
	if err != nil {
		return err
	}
	res, err := node.CheckPreflight(ctx, so, files, strict)
	if err != nil {
		return err
	}
	rep := res.Report
	refused := rep.Err()
	if f.JSON {
		if err := printJSON(w, rep); err != nil {
			return err
		}
	} else {
		for _, s := range res.Warnings {
			printf(errw, "warning: %s\n", s)
		}
		for _, x := range rep.Findings {
			sev := x.Severity
			if strict {
				sev = activate.Refuse
			}
			printf(w, "%s: %s\n", sev, x)
		}
		if !f.Quiet {
			printVerityFacts(w, rep.Verity)
		}
		if refused == nil && !f.Quiet {
			printf(w, "preflight passed for %d extension(s)\n", res.Checked)
		}
	}
	if refused != nil {
		return refused
	}
	return nil
}
