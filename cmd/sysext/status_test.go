package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sysext/sysext/extension"
	"github.com/sysext/sysext/internal/testenv"
	"github.com/sysext/sysext/node"
	"github.com/sysext/sysext/store"
)

// A node root (as 'sysext pull --root' leaves it) whose activation was
// interrupted: status flags it offline and exits 5.
func TestStatusCommand(t *testing.T) {
	root := t.TempDir()
	st := store.State{Schema: store.SchemaVersion, Extensions: map[string]*store.Entry{
		"hello": {Name: "hello", Active: store.Install{Version: "2", File: "hello-2-x86-64.raw"},
			Activation: store.Activation{Status: extension.ActivationPending}},
	}}
	b, _ := json.Marshal(st)
	writeFile(t, filepath.Join(root, "var/lib/sysext/state.json"), string(b))
	writeFile(t, filepath.Join(root, "var/lib/sysext/store/hello/hello-2-x86-64.raw"), "image")
	if err := os.MkdirAll(filepath.Join(root, "var/lib/extensions"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/var/lib/sysext/store/hello/hello-2-x86-64.raw", filepath.Join(root, "var/lib/extensions/hello.raw")); err != nil {
		t.Fatal(err)
	}
	out, errs, code := runCLI(t, "status", "--root", root)
	if code != exitDiffers || !strings.Contains(out, "was not proven (pending)") || !strings.Contains(out, "not asked: --root") {
		t.Fatalf("exit %d\n%s%s", code, out, errs)
	}
	out, _, code = runCLI(t, "status", "--root", root, "--json")
	var rep node.StatusReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil || code != exitDiffers || rep.Online || len(rep.Extensions) != 1 || rep.Extensions[0].Activation != "pending" {
		t.Fatalf("--json: exit %d %v\n%s", code, err, out)
	}
	for _, args := range [][]string{{"status", "x.raw"}, {"status", "--strict"}} {
		if _, errs, code := runCLI(t, args...); code != exitUsage {
			t.Errorf("%v: exit %d %s", args, code, errs)
		}
	}
}

func TestStatusPreflightCommand(t *testing.T) {
	testenv.RequireTool(t, "mksquashfs")
	dir := t.TempDir()
	tree := filepath.Join(dir, "tree")
	writeFile(t, filepath.Join(tree, "usr/lib/extension-release.d/extension-release.hello"), "ID=_any\nSYSEXT_VERSION_ID=1\nEXTENSION_RELOAD_MANAGER=1\n")
	img := filepath.Join(dir, "hello-1-x86-64.raw")
	if out, err := exec.Command("mksquashfs", tree, img, "-all-root", "-noappend", "-quiet").CombinedOutput(); err != nil {
		t.Fatalf("mksquashfs: %v %s", err, out)
	}
	root := t.TempDir()
	writeFile(t, filepath.Join(root, "usr/lib/systemd/libsystemd-shared-252.so"), "")
	// systemd 252 ignores EXTENSION_RELOAD_MANAGER: a warning, a refusal with --strict.
	out, errs, code := runCLI(t, "status", "--preflight", "--root", root, img)
	if code != 0 || !strings.Contains(out, "EXTENSION_RELOAD_MANAGER=1 needs systemd 255") {
		t.Fatalf("exit %d\n%s%s", code, out, errs)
	}
	out, errs, code = runCLI(t, "status", "--preflight", "--strict", "--root", root, img)
	if code != exitPreflight || !strings.Contains(errs, "preflight refused, nothing was changed") || !strings.Contains(errs, "daemon-reload") {
		t.Fatalf("--strict: exit %d\n%s%s", code, out, errs)
	}
	writeFile(t, filepath.Join(dir, "junk.raw"), "not an image")
	if _, errs, code := runCLI(t, "status", "--preflight", "--root", root, filepath.Join(dir, "junk.raw")); code != exitFailure || !strings.Contains(errs, "junk.raw") {
		t.Errorf("junk: exit %d %s", code, errs)
	}
}
