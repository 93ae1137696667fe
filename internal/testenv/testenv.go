package testenv

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// InCI reports whether the tests run in CI, where nothing may be skipped.
func InCI() bool { return os.Getenv("CI") != "" }

// skipOrFail skips the test with reason outside CI and fails it in CI.
func skipOrFail(t testing.TB, reason string) {
	t.Helper()
	if InCI() {
		t.Fatalf("%s (CI must provide it: run 'make test-deps')", reason)
	}
	t.Skip(reason)
}

// RequireTool returns the path of an outside tool, or skips (fails in CI).
func RequireTool(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		skipOrFail(t, name+" is not installed (make test-deps installs it)")
	}
	return p
}

// RequireRoot skips (fails in CI) when the test does not run as root.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		skipOrFail(t, "needs root (mount namespaces, systemd-sysext merge)")
	}
}

// Script is a shell script run by MergeScript inside a private mount
// namespace after /run has become a private tmpfs with /run/extensions.
type Script string

// RunInNamespace runs script with sh inside a new private mount namespace
// whose mounts propagate inside it (so systemd-sysext's overlay reaches the
// script) and never to the host. /run is a fresh tmpfs holding an empty
// /run/extensions. It returns the combined output.
func RunInNamespace(t testing.TB, script string, env ...string) (string, error) {
	t.Helper()
	RequireRoot(t)
	RequireTool(t, "unshare")
	RequireTool(t, "systemd-sysext")
	full := "set -e\nmount --make-rshared /\nmount -t tmpfs tmpfs /run\nmkdir -p /run/extensions\n" + script
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "unshare", "-m", "--propagation", "private", "sh", "-c", full)
	cmd.Env = append(os.Environ(), env...)
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	err := cmd.Run()
	return out.String(), err
}

// MergeAndRun copies (or links) the given images into /run/extensions of a
// private namespace, runs systemd-sysext merge, then the commands, and
// returns their combined output. The merge is judged by the caller from the
// output, never by systemd-sysext's exit code alone (252 can exit 0 after a
// failed mount).
func MergeAndRun(t testing.TB, images []string, commands ...string) (string, error) {
	t.Helper()
	var b strings.Builder
	for _, img := range images {
		abs, err := filepath.Abs(img)
		if err != nil {
			t.Fatal(err)
		}
		b.WriteString("cp " + shellQuote(abs) + " /run/extensions/\n")
	}
	b.WriteString("systemd-sysext merge\n")
	for _, c := range commands {
		b.WriteString(c + "\n")
	}
	return RunInNamespace(t, b.String())
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// ShellQuote quotes s for sh.
func ShellQuote(s string) string { return shellQuote(s) }

// TempDirNoLeak returns a temp dir and, at cleanup, fails the test if any
// file whose name starts with prefix remains anywhere under it.
func TempDirNoLeak(t testing.TB, prefix string) string {
	t.Helper()
	dir := t.TempDir()
	t.Cleanup(func() {
		_ = filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
			if err == nil && strings.HasPrefix(info.Name(), prefix) {
				t.Errorf("leftover temp file %s", p)
			}
			return nil
		})
	})
	return dir
}
