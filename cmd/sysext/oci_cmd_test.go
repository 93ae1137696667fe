package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sysext/sysext/internal/testenv"
	"github.com/sysext/sysext/oci/ocitest"
)

func TestOCICommands(t *testing.T) {
	t.Setenv("DOCKER_CONFIG", t.TempDir())
	reg := ocitest.NewOlareg(t)
	amd := ocitest.Squashfs(t, ocitest.Meta("hello", "1.0", "x86-64"), []byte("amd"))
	arm := ocitest.Squashfs(t, ocitest.Meta("hello", "1.0", "arm64"), []byte("arm"))
	ref := reg.Ref("ext/hello:1.0")

	out, errs, code := runCLI(t, "push", amd, ref, "--json")
	if code != 0 {
		t.Fatalf("push: %d %s", code, errs)
	}
	var pushed struct{ Digest string }
	if err := json.Unmarshal([]byte(out), &pushed); err != nil || !strings.HasPrefix(pushed.Digest, "sha256:") {
		t.Fatalf("push --json: %q %v", out, err)
	}
	if _, errs, code = runCLI(t, "push", "-q", "--append", arm, ref); code != 0 {
		t.Fatalf("push --append: %s", errs)
	}
	if _, errs, code = runCLI(t, "push", amd, arm, ref, "--annotation", "org.sysext.extension.id=fedora"); code != 1 || !strings.Contains(errs, "not set by hand") {
		t.Fatalf("push with our annotation key: %d %s", code, errs)
	}

	// inspect: every platform, judged against a given os-release.
	osr := filepath.Join(t.TempDir(), "os-release")
	os.WriteFile(osr, []byte("ID=debian\nVERSION_ID=12\n"), 0o644)
	out, errs, code = runCLI(t, "inspect", ref, "--json", "--os-release", osr)
	if code != 0 {
		t.Fatalf("inspect: %s", errs)
	}
	var ins refJSON
	if err := json.Unmarshal([]byte(out), &ins); err != nil || len(ins.Platforms) != 2 {
		t.Fatalf("inspect --json: %v %s", err, out)
	}
	for _, p := range ins.Platforms {
		if p.Extension == nil || p.Extension.Name != "hello" || p.Compatible == nil {
			t.Fatalf("inspect platform %+v", p)
		}
	}
	if out, _, code = runCLI(t, "inspect", ref); code != 0 || !strings.Contains(out, "linux/arm64") || !strings.Contains(out, "merges:") || !strings.Contains(out, "attached:") {
		t.Fatalf("inspect: %s", out)
	}

	// fetch needs the explicit opt-out until signatures are checked.
	dir := testenv.TempDirNoLeak(t, ".#")
	if _, errs, code = runCLI(t, "fetch", ref, "-o", dir); code != 1 || !strings.Contains(errs, "--insecure-allow-unsigned") {
		t.Fatalf("unsigned fetch: %d %s", code, errs)
	}
	out, errs, code = runCLI(t, "fetch", ref, "-o", dir, "--platform", "linux/arm64", "--insecure-allow-unsigned", "-q")
	if code != 0 {
		t.Fatalf("fetch: %s", errs)
	}
	if got := strings.TrimSpace(out); got != filepath.Join(dir, "hello-1.0-arm64.raw") {
		t.Fatalf("fetch printed %q", got)
	}
	if _, errs, code = runCLI(t, "fetch", ref, "-o", dir, "--platform", "linux/arm64", "--insecure-allow-unsigned"); code != 1 || !strings.Contains(errs, "--force") {
		t.Fatalf("fetch over an existing file: %d %s", code, errs)
	}
	if _, errs, code = runCLI(t, "fetch", ref, "-o", dir, "--platform", "linux/arm64", "--insecure-allow-unsigned", "--force"); code != 0 {
		t.Fatalf("fetch --force: %d %s", code, errs)
	}
	if _, errs, code = runCLI(t, "fetch", ref, "-o", dir, "--platform", "riscv64", "--insecure-allow-unsigned"); code != 1 || !strings.Contains(errs, "available: linux/amd64, linux/arm64") {
		t.Fatalf("missing platform: %d %s", code, errs)
	}
	if _, errs, code = runCLI(t, "fetch", "nohost", "--insecure-allow-unsigned"); code != 2 {
		t.Fatalf("bad reference: %d %s", code, errs)
	}

	// copy to a layout and fetch from it.
	layout := "oci:" + filepath.Join(t.TempDir(), "mirror") + ":1.0"
	if _, errs, code = runCLI(t, "copy", ref, layout, "-q"); code != 0 {
		t.Fatalf("copy: %s", errs)
	}
	dir2 := testenv.TempDirNoLeak(t, ".#")
	if _, errs, code = runCLI(t, "fetch", layout, "-o", dir2, "--platform", "x86-64", "--insecure-allow-unsigned"); code != 0 {
		t.Fatalf("fetch from layout: %s", errs)
	}
	a, _ := os.ReadFile(amd)
	b, _ := os.ReadFile(filepath.Join(dir2, "hello-1.0-x86-64.raw"))
	if !bytes.Equal(a, b) {
		t.Fatal("fetched from the layout copy differs")
	}

	if _, errs, code = runCLI(t, "fetch", "oci:"+filepath.Join(t.TempDir(), "none")+":1", "--insecure-allow-unsigned"); code != 1 || !strings.Contains(errs, "no OCI layout at") {
		t.Fatalf("missing layout: %d %s", code, errs)
	}

	// login asks for the password on stdin only.
	if _, errs, code = runCLI(t, "login", reg.Host, "-u", "me"); code != 2 || !strings.Contains(errs, "--password-stdin") {
		t.Fatalf("login without --password-stdin: %d %s", code, errs)
	}
}
