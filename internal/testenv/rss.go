package testenv

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// PeakRSSCommand wraps cmd so that it runs under GNU time, and returns a
// function that reads the command's own peak RSS in bytes once it has run.
// The wait4 rusage of a child started from a Go test is not usable: the
// kernel carries the parent's high-water mark into the child at exec, so a
// large test process inflates every child's number.
func PeakRSSCommand(t testing.TB, cmd *exec.Cmd) func() int64 {
	t.Helper()
	gnuTime := "/usr/bin/time"
	if _, err := os.Stat(gnuTime); err != nil {
		skipOrFail(t, "GNU time is not installed at /usr/bin/time (Debian package time)")
	}
	out := filepath.Join(t.TempDir(), "rss")
	cmd.Args = append([]string{gnuTime, "-f", "%M", "-o", out, cmd.Path}, cmd.Args[1:]...)
	cmd.Path = gnuTime
	return func() int64 {
		b, err := os.ReadFile(out)
		if err != nil {
			t.Fatalf("peak RSS of %s: %v", cmd.Args[5], err)
		}
		// GNU time may prefix "Command exited with non-zero status" lines.
		lines := strings.Fields(string(b))
		kib, err := strconv.ParseInt(lines[len(lines)-1], 10, 64)
		if err != nil {
			t.Fatalf("peak RSS of %s: %q: %v", cmd.Args[5], b, err)
		}
		return kib << 10
	}
}
