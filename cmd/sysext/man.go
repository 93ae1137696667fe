//go:build man

// The man page generator is built only with -tags man (make man, make
// install): cobra/doc, go-md2man and blackfriday would otherwise be linked
// into every sysext and their package initialisation (blackfriday's
// tables and regular expressions, about 2 ms) paid on every start.

package main

import (
	"embed"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/cpuguy83/go-md2man/v2/md2man"
	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"
)

func init() { register("man", newManCommand) }

// manFiles are the section 5 pages of the files a user writes, in
// markdown (go-md2man's dialect, as cobra's generator writes).
//
//go:embed man/*.md
var manFiles embed.FS

// newManCommand is the hidden generator `make man` (and `make install`)
// runs, from a binary built with -tags man: sysext(1) and one page per command from the cobra definitions,
// plus sysext-policy.json(5), sysext-extensions.d(5) and
// sysext-registries.conf(5).
func newManCommand() *cobra.Command {
	return &cobra.Command{
		Use:    "man DIR",
		Short:  "Write the manual pages into DIR (man1/, man5/)",
		Hidden: true,
		Args:   argsUsage(cobra.ExactArgs(1)),
		RunE: func(c *cobra.Command, args []string) error {
			pages, err := writeManPages(args[0])
			if err != nil {
				return err
			}
			_, err = fmt.Fprintf(c.OutOrStdout(), "wrote %d manual pages under %s\n", len(pages), args[0])
			return err
		},
	}
}

// writeManPages writes dir/man1/sysext*.1 and dir/man5/*.5 and returns
// their paths. The date is $SOURCE_DATE_EPOCH's when set, so the pages
// are reproducible.
func writeManPages(dir string) ([]string, error) {
	date := time.Now()
	if n, ok, err := sourceDateEpoch(); err != nil {
		return nil, err
	} else if ok {
		date = time.Unix(n, 0).UTC()
	}
	man1, man5 := filepath.Join(dir, "man1"), filepath.Join(dir, "man5")
	for _, d := range []string{man1, man5} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	root := newRootCommand()
	root.DisableAutoGenTag = true
	prepareForMan(root)
	header := &doc.GenManHeader{Section: "1", Date: &date, Source: "sysext " + version, Manual: "sysext manual"}
	if err := doc.GenManTree(root, header, man1); err != nil {
		return nil, fmt.Errorf("man pages: %w", err)
	}
	pages, err := filepath.Glob(filepath.Join(man1, "sysext*.1"))
	if err != nil {
		return nil, err
	}
	srcs, err := fs.Glob(manFiles, "man/*.md")
	if err != nil {
		return nil, err
	}
	for _, src := range srcs {
		md, err := manFiles.ReadFile(src)
		if err != nil {
			return nil, err
		}
		md = []byte(strings.ReplaceAll(string(md), "@DATE@", date.Format("Jan 2006")))
		name := strings.TrimSuffix(filepath.Base(src), ".md") // sysext-policy.json.5
		out := filepath.Join(man5, name)
		if err := os.WriteFile(out, md2man.Render(md), 0o644); err != nil {
			return nil, err
		}
		pages = append(pages, out)
	}
	return pages, nil
}

// prepareForMan rewrites each command's help for cobra's generator, which
// reads it as markdown: indented blocks (examples, the exit status table)
// stay as they are, and in prose the characters markdown would take for
// emphasis or HTML (*.conf, sha256-<hex>, _any) are escaped.
func prepareForMan(c *cobra.Command) {
	c.Long = manMarkdown(c.Long)
	for _, sub := range c.Commands() {
		prepareForMan(sub)
	}
}

var markdownSpecial = regexp.MustCompile(`([\\*_<>\[\]` + "`" + `])`)

func manMarkdown(s string) string {
	var out []string
	inBlock := false
	for _, line := range strings.Split(s, "\n") {
		indented := strings.HasPrefix(line, "  ")
		switch {
		case indented:
			if !inBlock && len(out) > 0 && out[len(out)-1] != "" {
				out = append(out, "") // a code block starts after a blank line
			}
			inBlock = true
			out = append(out, "    "+line)
			continue
		case inBlock && line != "":
			out = append(out, "")
		}
		inBlock = false
		out = append(out, markdownSpecial.ReplaceAllString(line, `\$1`))
	}
	return strings.Join(out, "\n")
}
