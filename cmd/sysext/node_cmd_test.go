package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sysext/sysext/extension"
	"github.com/sysext/sysext/oci/ocitest"
)

// TestNodeCommands covers the node commands' exit codes and output on an
// OCI layout and a node root in a temp dir.
func TestNodeCommands(t *testing.T) {
	t.Setenv("DOCKER_CONFIG", t.TempDir())
	arch := extension.HostArch()
	v1 := ocitest.Squashfs(t, ocitest.Meta("cmdhello", "1.0", arch), []byte("one"))
	v2 := ocitest.Squashfs(t, ocitest.Meta("cmdhello", "2.0", arch), []byte("two"))
	ref := ocitest.NewLayout(t, "stable").String()
	if _, errs, code := runCLI(t, "push", "-q", v1, ref); code != 0 {
		t.Fatalf("push: %s", errs)
	}
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "etc"), 0o755)
	os.WriteFile(filepath.Join(root, "etc/os-release"), []byte("ID=debian\nVERSION_ID=12\n"), 0o644)

	if _, errs, code := runCLI(t, "pull", ref, "--root", root); code != exitFailure || !strings.Contains(errs, "no trust policy") {
		t.Fatalf("pull without a policy: %d %s", code, errs)
	}
	out, errs, code := runCLI(t, "pull", ref, "--root", root, "--insecure-allow-unsigned", "--json")
	var r struct{ Name, Version, Action string }
	if code != 0 || json.Unmarshal([]byte(out), &r) != nil || r.Version != "1.0" || r.Action != "pulled" {
		t.Fatalf("pull: %d %q %s", code, out, errs)
	}
	if !strings.Contains(errs, "without a signature") {
		t.Fatalf("no warning for an unsigned pull: %s", errs)
	}
	if _, _, code := runCLI(t, "update", "--root", root); code != exitUsage {
		t.Fatalf("update without names: %d", code)
	}
	if out, _, code := runCLI(t, "update", "--all", "--root", root); code != exitNothingToDo || !strings.Contains(out, "up to date") {
		t.Fatalf("update, nothing new: %d %s", code, out)
	}
	if _, errs, code := runCLI(t, "push", "-q", v2, ref); code != 0 {
		t.Fatalf("push: %s", errs)
	}
	if out, _, code := runCLI(t, "update", "--all", "--dry-run", "--root", root); code != 0 || !strings.Contains(out, "dry run") {
		t.Fatalf("update --dry-run: %d %s", code, out)
	}
	if out, _, code := runCLI(t, "update", "cmdhello", "--root", root); code != 0 || !strings.Contains(out, "updated from 1.0") {
		t.Fatalf("update: %d %s", code, out)
	}
	if out, _, code := runCLI(t, "list", "--root", root); code != 0 || !strings.Contains(out, "cmdhello") || !strings.Contains(out, "2.0") {
		t.Fatalf("list: %d %s", code, out)
	}
	if out, _, code := runCLI(t, "rollback", "cmdhello", "--root", root); code != 0 || !strings.Contains(out, "1.0") {
		t.Fatalf("rollback: %d %s", code, out)
	}
	if _, _, code := runCLI(t, "gc", "--keep", "0", "--root", root); code != exitUsage {
		t.Fatalf("gc --keep 0: %d", code)
	}
	if out, _, code := runCLI(t, "gc", "--keep", "1", "--root", root); code != 0 || !strings.Contains(out, "cmdhello-2.0") {
		t.Fatalf("gc: %d %s", code, out)
	}
	if _, errs, code := runCLI(t, "rollback", "nosuch", "--root", root); code != exitFailure || !strings.Contains(errs, "not installed") {
		t.Fatalf("rollback of nothing: %d %s", code, errs)
	}
	osr := filepath.Join(t.TempDir(), "os-release")
	os.WriteFile(osr, []byte("ID=debian\nVERSION_ID=13\n"), 0o644)
	if out, _, code := runCLI(t, "check", "--os-release", osr, "--root", root); code != 0 || !strings.Contains(out, "cmdhello: ok") {
		t.Fatalf("check: %d %s", code, out)
	}
	if _, _, code := runCLI(t, "check", "--root", root); code != exitUsage {
		t.Fatalf("check without --os-release: %d", code)
	}
	// A corrupt state: list explains and exits 1, the link is untouched.
	state := filepath.Join(root, "var/lib/sysext/state.json")
	os.WriteFile(state, []byte("{"), 0o644)
	if out, _, code := runCLI(t, "list", "--root", root); code != exitFailure || !strings.Contains(out, state) || !strings.Contains(out, "sysext link") {
		t.Fatalf("list with a corrupt state: %d %s", code, out)
	}
	os.Remove(state)
	units := t.TempDir()
	if out, _, code := runCLI(t, "install-units", "--root", units); code != 0 || !strings.Contains(out, "sysext-update.timer") {
		t.Fatalf("install-units: %d %s", code, out)
	}
	b, err := os.ReadFile(filepath.Join(units, "etc/systemd/system/sysext-sync.service"))
	if err != nil || !strings.Contains(string(b), "Before=systemd-sysext.service") || !strings.Contains(string(b), "ExecStart=/usr/local/bin/sysext sync --offline") {
		t.Fatalf("sysext-sync.service: %v\n%s", err, b)
	}
	if _, err := os.Readlink(filepath.Join(units, "etc/systemd/system/timers.target.wants/sysext-update.timer")); err != nil {
		t.Fatal("timer not enabled")
	}
}
