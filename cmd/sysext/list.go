package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
)

func init() { register(newListCommand) }

type listOptions struct{ nodeFlags }

func newListCommand() *cobra.Command {
	var opts listOptions
	c := &cobra.Command{
		Use:   "list",
		Short: "List installed extensions: version, digest, source, signer, active, previous versions",
		Long: `List the extensions sysext installed, with version, digest, source, signer,
whether the activation link points at the active image, the activation status
and the previous versions kept for rollback. When the state file cannot be
read, list says so and shows what the extensions directory and the store hold.`,
		Args: argsUsage(cobra.NoArgs),
		RunE: func(c *cobra.Command, args []string) error {
			return runList(c.Context(), c, opts)
		},
	}
	opts.nodeFlags.addFlags(c, false, false)
	return c
}

func runList(ctx context.Context, c *cobra.Command, opts listOptions) error {
	n, err := opts.node(c, false)
	if err != nil {
		return err
	}
	l, err := n.List(ctx)
	if err != nil {
		return err
	}
	w := c.OutOrStdout()
	if opts.JSON {
		if err := printJSON(w, l); err != nil {
			return err
		}
	} else {
		if l.Locked != "" {
			fmt.Fprintf(c.ErrOrStderr(), "warning: read without the lock: %s\n", l.Locked)
		}
		if l.StateError != "" {
			fmt.Fprintf(w, "%s\nOn disk:\n", l.StateError)
			for _, s := range l.Seen {
				own := "not installed by sysext"
				if s.Ours {
					own = "sysext link"
				}
				fmt.Fprintf(w, "  %s: link %s -> %s (%s); stored: %s\n", s.Name, s.Link, s.Target, own, strings.Join(s.Stored, ", "))
			}
		} else if len(l.Extensions) == 0 {
			if !opts.Quiet {
				fmt.Fprintln(w, "no extensions installed by sysext")
			}
		} else {
			tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tVERSION\tACTIVE\tDIGEST\tSIGNER\tSOURCE\tPREVIOUS")
			for _, e := range l.Extensions {
				act := e.Activation.Status
				if !e.Linked {
					act = "NOT LINKED"
				}
				signer := e.Active.Signer
				if e.Active.Unsigned {
					signer = "UNSIGNED"
				}
				var prev []string
				for _, p := range e.Previous {
					prev = append(prev, p.Version)
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", e.Name, e.Active.Version, act, short(e.Active.ManifestDigest.String()), orDash(signer), e.Source, orDash(strings.Join(prev, ",")))
			}
			tw.Flush()
		}
	}
	if l.StateError != "" {
		return errors.New("the state file is unreadable (see above)")
	}
	return nil
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
