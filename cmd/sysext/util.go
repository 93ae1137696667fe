package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/sysext/sysext/extension"
)

// printf writes text for people. It goes through extension.EscapeLines,
// the one escaping function of every printer: a name, version, annotation,
// signer or registry message in it is shown as escapes where it would act
// on the terminal (ESC, U+202E, zero-width characters). Machine output
// (--json) is JSON-encoded instead.
func printf(w io.Writer, format string, args ...any) (int, error) {
	return io.WriteString(w, extension.EscapeLines(fmt.Sprintf(format, args...)))
}

// escapeWriter passes what is written through extension.EscapeLines: for
// writers that library code logs to (the node's progress lines and
// warnings), whose messages can carry registry text.
type escapeWriter struct{ w io.Writer }

func (e escapeWriter) Write(p []byte) (int, error) {
	if _, err := io.WriteString(e.w, extension.EscapeLines(string(p))); err != nil {
		return 0, err
	}
	return len(p), nil
}

// printLine is printf for one line of text.
func printLine(w io.Writer, s string) (int, error) {
	return io.WriteString(w, extension.EscapeLines(s)+"\n")
}

// isCobraUsage recognises cobra's own errors for an unknown command, which it
// does not type. Flag and argument errors are typed by SetFlagErrorFunc and
// argsUsage, so only prefixes cobra itself writes are matched here: a
// command's own error that merely mentions a flag stays a failure (exit 1).
func isCobraUsage(err error) bool {
	s := err.Error()
	for _, p := range []string{"unknown command ", "unknown flag: ", "unknown shorthand flag: "} {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}

// argsUsage wraps a cobra positional-argument check so a wrong count exits 2.
func argsUsage(check cobra.PositionalArgs) cobra.PositionalArgs {
	return func(c *cobra.Command, args []string) error {
		if err := check(c, args); err != nil {
			return usageError("%v (see '%s --help')", err, c.CommandPath())
		}
		return nil
	}
}

// printJSON writes v as indented JSON followed by a newline.
func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
