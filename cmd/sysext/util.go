package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"

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

// argsUsage wraps a cobra positional-argument check so a wrong count exits 2.
// Wrapping twice (finishCommands wraps every command's check) changes
// nothing.
func argsUsage(check cobra.PositionalArgs) cobra.PositionalArgs {
	return func(c *cobra.Command, args []string) error {
		err := check(c, args)
		var ee *exitError
		if err == nil || errors.As(err, &ee) {
			return err
		}
		return usageError("%v (see '%s --help')", err, c.CommandPath())
	}
}

// printJSON writes v as indented JSON followed by a newline.
func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// sourceDateEpoch reads $SOURCE_DATE_EPOCH (reproducible-builds.org): the
// time build, bake and the man pages write, in seconds since 1970; ok is
// false when it is not set. A value that is not such a number is a usage
// error.
func sourceDateEpoch() (secs int64, ok bool, err error) {
	s := os.Getenv("SOURCE_DATE_EPOCH")
	if s == "" {
		return 0, false, nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 {
		return 0, false, usageError("SOURCE_DATE_EPOCH=%q: use a number of seconds since 1970", s)
	}
	return n, true, nil
}
