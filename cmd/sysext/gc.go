package main

import (
	"context"

	"github.com/spf13/cobra"
)

func init() { register("gc", newGCCommand) }

type gcOptions struct {
	nodeFlags
	Keep int
}

func newGCCommand() *cobra.Command {
	var opts gcOptions
	c := &cobra.Command{
		Use:   "gc [--keep N]",
		Short: "Delete stored versions beyond the newest N per extension",
		Long: `Keep N versions of each extension (default 2: the active one and one to roll
back to) and delete the older stored files, and stored files no record uses.
The active version is never removed. Per deployment (ostree, bootc), files
that another deployment's links or state use are kept.`,
		Args: argsUsage(cobra.NoArgs),
		RunE: func(c *cobra.Command, args []string) error {
			if opts.Keep < 1 {
				return usageError("--keep %d: keep at least 1 (the active version is never removed)", opts.Keep)
			}
			return runGC(c.Context(), c, opts)
		},
	}
	opts.nodeFlags.addFlags(c, false, false)
	c.Flags().IntVar(&opts.Keep, "keep", 2, "versions to keep per extension, the active one included")
	return c
}

func runGC(ctx context.Context, c *cobra.Command, opts gcOptions) error {
	n, err := opts.node(c, false)
	if err != nil {
		return err
	}
	removed, err := n.GC(ctx, opts.Keep)
	if opts.JSON {
		if removed == nil {
			removed = []string{}
		}
		if jerr := printJSON(c.OutOrStdout(), map[string]any{"removed": removed}); jerr != nil {
			return jerr
		}
	} else if !opts.Quiet {
		for _, r := range removed {
			printf(c.OutOrStdout(), "removed %s\n", r)
		}
	}
	if err == nil && len(removed) == 0 {
		return nothingToDo("no stored version beyond the newest %d of each extension, and no stored file without a record", opts.Keep)
	}
	return err
}
