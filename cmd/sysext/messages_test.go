package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sysext/sysext/extension"
	"github.com/sysext/sysext/internal/testenv"
	"github.com/sysext/sysext/oci/ocitest"
)

// TestMessagesANewUserReads: the messages of issue 18, each one line that
// names the thing and what to do, and nothing left behind.
func TestMessagesANewUserReads(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)

	// fetch -o a missing directory: not "not a directory".
	_, errs, code := runCLI(t, "fetch", "localhost:5000/x:1", "-o", "missing-dir", "--insecure-allow-unsigned")
	if code != exitUsage || !strings.Contains(errs, "-o missing-dir: no such directory: create it first") {
		t.Errorf("fetch -o missing-dir: exit %d %s", code, errs)
	}
	writeFile(t, filepath.Join(dir, "afile"), "x")
	if _, errs, _ := runCLI(t, "fetch", "localhost:5000/x:1", "-o", "afile", "--insecure-allow-unsigned"); !strings.Contains(errs, "-o afile is a file") {
		t.Errorf("fetch -o a file: %s", errs)
	}

	// logout --help says more than one line.
	out, _, _ := runCLI(t, "logout", "--help")
	if desc := strings.SplitN(out, "Exit status", 2)[0]; strings.Count(strings.TrimSpace(desc), "\n") < 3 || !strings.Contains(desc, "config.json") {
		t.Errorf("logout --help:\n%s", out)
	}

	// A failed copy to a new layout leaves no empty layout behind.
	reg := ocitest.NewOlareg(t)
	if _, errs, code := runCLI(t, "copy", reg.Ref("ext/none:1"), "oci:"+filepath.Join(dir, "mirror")+":1"); code != exitFailure {
		t.Errorf("copy of a missing tag: exit %d %s", code, errs)
	}
	if _, err := os.Stat(filepath.Join(dir, "mirror")); err == nil {
		t.Error("a failed copy left the layout directory behind")
	}
	// A failed push to a new layout neither.
	writeFile(t, filepath.Join(dir, "junk.raw"), "not an image")
	if _, _, code := runCLI(t, "push", "junk.raw", "oci:"+filepath.Join(dir, "out")+":1"); code != exitFailure {
		t.Errorf("push of junk: exit %d", code)
	}
	if _, err := os.Stat(filepath.Join(dir, "out")); err == nil {
		t.Error("a failed push left the layout directory behind")
	}
}

// TestBuildQuietAndLevelWithoutOS: build -q prints the path alone;
// --sysext-level or --version-id without --os is refused (systemd-sysext
// ignores them with ID=_any) before anything is built.
func TestBuildQuietAndLevelWithoutOS(t *testing.T) {
	testenv.RequireTool(t, "mksquashfs")
	out := t.TempDir()
	stdout, errs, code := runCLI(t, "build", exampleTree(t), "--name", "hello", "--version", "1", "-o", out+"/", "-q")
	want := filepath.Join(out, extension.FileName("hello", "1", extension.HostArch()))
	if code != 0 || stdout != want+"\n" || errs != "" {
		t.Fatalf("build -q: exit %d %q %q, want %q", code, stdout, errs, want)
	}
	for _, flag := range []string{"--sysext-level", "--version-id"} {
		_, errs, code := runCLI(t, "build", exampleTree(t), "--name", "lvl", "--version", "1", "-o", out+"/", flag, "1.0")
		if code != exitUsage || !strings.Contains(errs, "need --os ID") {
			t.Errorf("build %s without --os: exit %d %s", flag, code, errs)
		}
	}
	if ents, _ := os.ReadDir(out); len(ents) != 1 {
		t.Errorf("refused builds wrote: %v", ents)
	}
}

// TestBakeDownloadErrorNamesTheURLOnce: a download that fails names the
// place it tried once (and the URL it stands for, through a mirror).
func TestBakeDownloadErrorNamesTheURLOnce(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	for _, mirror := range []string{"http://127.0.0.1:1/", filepath.Join(dir, "empty-mirror")} {
		_, errs, code := runCLI(t, "bake", "tailscale", "--version", "1.76.6", "--arch", "x86-64", "--mirror", mirror, "--cache", filepath.Join(dir, "cache"))
		if code != exitFailure || strings.Count(errs, "\n") != 1 {
			t.Fatalf("bake through %s: exit %d\n%s", mirror, code, errs)
		}
		const upstream = "https://pkgs.tailscale.com/stable/tailscale_1.76.6_amd64.tgz.sha256"
		local := strings.TrimSuffix(mirror, "/") + "/pkgs.tailscale.com/stable/tailscale_1.76.6_amd64.tgz.sha256"
		if strings.Count(errs, upstream) != 1 || strings.Count(errs, local) != 1 {
			t.Errorf("bake through %s: want %s and %s once each:\n%s", mirror, upstream, local, errs)
		}
	}
}
