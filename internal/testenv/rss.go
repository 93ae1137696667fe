package testenv

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
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

// OwnPeakRSS starts cmd and returns a function that waits for it and
// returns its own peak RSS in bytes, without its children's (GNU time's
// figure includes the largest child, so a build that runs mksquashfs
// reports mksquashfs): VmHWM of /proc/PID/status, read every few
// milliseconds while it runs (a high-water mark, so the last reading is
// the peak).
func OwnPeakRSS(t testing.TB, cmd *exec.Cmd) (wait func() (int64, error)) {
	t.Helper()
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", cmd.Path, err)
	}
	status := filepath.Join("/proc", strconv.Itoa(cmd.Process.Pid), "status")
	var peak int64
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	read := func() {
		b, err := os.ReadFile(status)
		if err != nil {
			return
		}
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "VmHWM:"); ok {
				f := strings.Fields(v)
				if len(f) > 0 {
					if kib, err := strconv.ParseInt(f[0], 10, 64); err == nil && kib<<10 > peak {
						peak = kib << 10
					}
				}
			}
		}
	}
	return func() (int64, error) {
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case err := <-done:
				return peak, err
			case <-tick.C:
				read()
			}
		}
	}
}
