package main

import (
	"crypto/sha512"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sysext/sysext/internal/testenv"
)

// TestButaneSaysWhoInstallsSysext: the snippet of 'sysext butane REF --key
// cosign.pub' runs 'sysext pull' on a node that has no sysext (Flatcar and
// Fedora CoreOS do not ship it). Without --binary-url it says so, on stderr
// and in the snippet; with --binary-url and --binary FILE Ignition
// downloads the binary and checks its sha512. The real butane accepts
// every snippet with --strict.
func TestButaneSaysWhoInstallsSysext(t *testing.T) {
	butane := testenv.RequireTool(t, "butane")
	dir := t.TempDir()
	t.Chdir(dir)
	t.Setenv("COSIGN_PASSWORD", "")
	if _, errs, code := runCLI(t, "generate-key-pair"); code != 0 {
		t.Fatalf("generate-key-pair: %s", errs)
	}
	ref := "ghcr.io/acme/ext/tailscale:1.76.6"
	toIgnition := func(snippet string) string {
		t.Helper()
		cmd := exec.Command(butane, "--strict")
		cmd.Stdin = strings.NewReader(snippet)
		var stderr strings.Builder
		cmd.Stderr = &stderr
		ign, err := cmd.Output()
		if err != nil {
			t.Fatalf("butane --strict refused the snippet: %v\n%s\n%s", err, stderr.String(), snippet)
		}
		return string(ign)
	}

	out, errs, code := runCLI(t, "butane", ref, "--key", "cosign.pub")
	if code != 0 || !strings.Contains(errs, "does not install sysext") || !strings.Contains(errs, "--binary-url") || strings.Count(errs, "\n") != 1 {
		t.Fatalf("without --binary-url: exit %d, want one warning saying sysext is not installed:\n%s", code, errs)
	}
	if !strings.Contains(out, "# NOTE: this snippet does not install sysext") {
		t.Fatalf("the snippet does not say it:\n%s", out)
	}
	toIgnition(out)

	bin := filepath.Join(dir, "sysext-bin")
	os.WriteFile(bin, []byte("#!/bin/sh\necho a sysext binary\n"), 0o755)
	sum := sha512.Sum512([]byte("#!/bin/sh\necho a sysext binary\n"))
	want := "sha512-" + hex.EncodeToString(sum[:])
	out, errs, code = runCLI(t, "butane", ref, "--key", "cosign.pub", "--binary-url", "https://example.com/sysext", "--binary", bin)
	if code != 0 || errs != "" || strings.Contains(out, "NOTE") {
		t.Fatalf("with --binary-url --binary: exit %d\n%s%s", code, errs, out)
	}
	ign := toIgnition(out)
	for _, s := range []string{`"path":"/opt/bin/sysext"`, `"source":"https://example.com/sysext"`, `"hash":"` + want + `"`, "ExecStart=/opt/bin/sysext pull " + ref, "sysext-update.timer"} {
		if !strings.Contains(ign, s) {
			t.Errorf("Ignition lacks %s:\n%s", s, ign)
		}
	}
	if _, errs, _ := runCLI(t, "butane", ref, "--binary-url", "https://example.com/sysext"); !strings.Contains(errs, "without checking it") {
		t.Errorf("a download without a hash: no warning:\n%s", errs)
	}

	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"butane", ref, "--key", "cosign.key"}, "not a cosign public key"},
		{[]string{"butane", ref, "--binary", bin}, "give --binary-url"},
		{[]string{"butane", ref, "--binary-url", "https://x/sysext", "--binary-hash", "sha512-00"}, "--binary-hash"},
	} {
		if out, errs, code := runCLI(t, c.args...); code != exitUsage || !strings.Contains(errs, c.want) || out != "" {
			t.Errorf("sysext %s: exit %d, want 2 and %q:\n%s%s", strings.Join(c.args, " "), code, c.want, errs, out)
		}
	}
}
