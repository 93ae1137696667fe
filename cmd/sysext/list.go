package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode/utf8"

	"github.com/spf13/cobra"

	"github.com/sysext/sysext/extension"
)

func init() { register("list", newListCommand) }

type listOptions struct {
	nodeFlags
	Wide bool
}

// listWidth is what the table fits by default: sources and signers are
// shortened in the middle with '…' (--wide prints them whole).
const listWidth = 100

func newListCommand() *cobra.Command {
	var opts listOptions
	c := &cobra.Command{
		Use:   "list [--wide]",
		Short: "List installed extensions: version, digest, source, signer, active, previous versions",
		Long: `List the extensions sysext installed, with version, digest, source, signer,
whether the activation link points at the active image, the activation status
and the previous versions kept for rollback. When the state file cannot be
read, list says so and shows what the extensions directory and the store hold.

The table fits 100 columns: digests and key signers show their first 12
hex digits, long sources and signers are shortened in the middle with '…';
--wide prints them whole, --json prints everything.

ACTIVE is the activation status: proven (sysext saw systemd-sysext merge
it), unproven (linked with --root, in an image build or a staged
deployment, and not seen merged yet: the next 'sysext sync' on the running
system proves it; sysext-sync-online.service runs one after boot), pending
or refreshed (an activation was interrupted; the next pull, update or sync
finishes it), rolled-back, failed, or NOT LINKED (the link does not point
at the active image).`,
		Args: argsUsage(cobra.NoArgs),
		RunE: func(c *cobra.Command, args []string) error {
			return runList(c.Context(), c, opts)
		},
	}
	opts.nodeFlags.addFlags(c, false, false)
	c.Flags().BoolVar(&opts.Wide, "wide", false, "print digests, sources and signers whole, however wide the table")
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
			printf(c.ErrOrStderr(), "warning: read without the lock: %s\n", l.Locked)
		}
		if l.StateError != "" {
			printf(w, "%s\nOn disk:\n", l.StateError)
			for _, s := range l.Seen {
				own := "not installed by sysext"
				if s.Ours {
					own = "sysext link"
				}
				printf(w, "  %s: link %s -> %s (%s); stored: %s\n", s.Name, s.Link, s.Target, own, strings.Join(s.Stored, ", "))
			}
		} else if len(l.Extensions) == 0 {
			if !opts.Quiet {
				printLine(w, "no extensions installed by sysext")
			}
		} else {
			rows := [][]string{{"NAME", "VERSION", "ACTIVE", "DIGEST", "SIGNER", "SOURCE", "PREVIOUS"}}
			unproven := false
			for _, e := range l.Extensions {
				act := e.Activation.Status
				if !e.Linked {
					act = "NOT LINKED"
				}
				unproven = unproven || act == extension.ActivationUnproven
				signer := e.Active.Signer
				if e.Active.Unsigned {
					signer = "UNSIGNED"
				}
				var prev []string
				for _, p := range e.Previous {
					prev = append(prev, p.Version)
				}
				digest := e.Active.ManifestDigest.String()
				if !opts.Wide {
					digest, signer = extension.ShortDigest(digest), shortSigner(signer)
				}
				rows = append(rows, []string{e.Name, e.Active.Version, orDash(string(act)), digest, orDash(signer), e.Source, orDash(strings.Join(prev, ","))})
			}
			width := listWidth
			if opts.Wide {
				width = 0
			}
			printTable(w, rows, width, 5, 4, 6)
			if unproven && !opts.Quiet {
				printLine(w, "unproven: linked with --root, not seen merged yet; the next 'sysext sync' on the running")
				printLine(w, "system proves it (sysext-sync-online.service runs one after boot)")
			}
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

// printTable writes rows in columns two spaces apart. With width > 0 the
// columns named in shrink (widest first) are shortened in the middle with
// '…', down to 12 characters each, until every line fits width.
func printTable(w io.Writer, rows [][]string, width int, shrink ...int) {
	if len(rows) == 0 {
		return
	}
	n := len(rows[0])
	widths := make([]int, n)
	for _, r := range rows {
		for i, cell := range r {
			cell = extension.Escape(cell) // registry text, shown as escapes
			r[i] = cell
			widths[i] = max(widths[i], utf8.RuneCountInString(cell))
		}
	}
	const gap, minCol = 2, 12
	total := func() int {
		t := gap * (n - 1)
		for _, x := range widths {
			t += x
		}
		return t
	}
	// One character at a time from the widest, so the shortening is
	// shared between the columns rather than all taken from one.
	for width > 0 && total() > width {
		col := -1
		for _, i := range shrink {
			if widths[i] > minCol && (col < 0 || widths[i] > widths[col]) {
				col = i
			}
		}
		if col < 0 {
			break
		}
		widths[col]--
	}
	for _, r := range rows {
		var line strings.Builder
		for i, cell := range r {
			cell = ellipsize(cell, widths[i])
			line.WriteString(cell)
			if i < n-1 {
				line.WriteString(strings.Repeat(" ", widths[i]-utf8.RuneCountInString(cell)+gap))
			}
		}
		fmt.Fprintln(w, strings.TrimRight(line.String(), " "))
	}
}

// shortSigner shortens a key signer ("key:sha256:<hex>") to its first 12
// hex digits, as a key id; identities stay as they are.
func shortSigner(s string) string {
	if rest, ok := strings.CutPrefix(s, "key:"); ok {
		return "key:" + extension.ShortDigest(rest)
	}
	return s
}

// ellipsize shortens s to n characters by replacing its middle with '…',
// keeping the start (the host, the key type) and the end (the tag).
func ellipsize(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	head := (n - 1) / 2
	tail := n - 1 - head
	return string(r[:head]) + "…" + string(r[len(r)-tail:])
}
