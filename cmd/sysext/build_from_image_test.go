package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"strings"
	"testing"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/sysext/sysext/internal/testenv"
	"github.com/sysext/sysext/oci/ocitest"
)

func TestBuildFromImageCommand(t *testing.T) {
	testenv.RequireTool(t, "mksquashfs")
	t.Setenv("DOCKER_CONFIG", t.TempDir())
	reg := ocitest.NewOlareg(t)
	baseLayer := [][2]string{{"usr/", ""}, {"usr/lib/", ""}, {"usr/lib/os-release", "ID=fedora\nVERSION_ID=42\nIMAGE_ID=silverblue\n"}, {"usr/share/", ""}, {"usr/share/gone", "x"}}
	added := [][2]string{{"usr/", ""}, {"usr/bin/", ""}, {"usr/bin/tool", "#!/bin/sh\n"},
		{"usr/lib/", ""}, {"usr/lib/systemd/", ""}, {"usr/lib/systemd/system/", ""}, {"usr/lib/systemd/system/tool.service", "[Service]\nExecStart=/usr/bin/tool\n"}, {"etc/", ""}, {"etc/tool.conf", "c"}}
	deletion := [][2]string{{"usr/share/.wh.gone", ""}}
	base := pushLayered(t, reg, "os/base:42", ocispec.ImageConfig{}, baseLayer)
	derived := pushLayered(t, reg, "os/tool:1", ocispec.ImageConfig{}, baseLayer, added, deletion)
	out := testenv.TempDirNoLeak(t, ".#")

	_, errs, code := runCLI(t, "build", "--from-image", derived, "--base", base, "--name", "tool", "--version", "1", "-o", out+"/")
	if code != 1 || !strings.Contains(errs, "/usr/share/gone") || !strings.Contains(errs, "--ignore-deletions") {
		t.Fatalf("deletion: %d %s", code, errs)
	}
	stdout, errs, code := runCLI(t, "build", "--from-image", derived, "--base", base, "--name", "tool", "--version", "1", "-o", out+"/", "--ignore-deletions", "--json")
	if code != 0 {
		t.Fatalf("build: %d %s", code, errs)
	}
	var res struct {
		Path, ID  string
		VersionID string `json:"version_id"`
	}
	if err := json.Unmarshal([]byte(stdout), &res); err != nil || res.ID != "fedora" || res.VersionID != "42" {
		t.Fatalf("result %s: %v", stdout, err)
	}
	if _, err := os.Stat(res.Path); err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{"shares 1 layers", "dropped etc/ (1)", "IMAGE_ID=silverblue"} {
		if !strings.Contains(errs, w) {
			t.Fatalf("stderr lacks %q: %s", w, errs)
		}
	}
	// --os given: not bound to the base.
	stdout, errs, code = runCLI(t, "build", "--from-image", derived, "--base", base, "--name", "tool", "--version", "2", "-o", out+"/", "--ignore-deletions", "--json", "--os", "_any")
	if code != 0 || !strings.Contains(stdout, `"id": "_any"`) {
		t.Fatalf("--os _any: %d %s %s", code, stdout, errs)
	}
	// /etc goes to a confext bound the same way.
	conf := out + "/tool-conf.raw"
	if _, errs, code = runCLI(t, "build", "--from-image", derived, "--base", base, "--name", "tool", "--version", "3", "-o", out+"/", "--ignore-deletions", "--confext", conf); code != 0 || !strings.Contains(errs, "confext") {
		t.Fatalf("--confext: %d %s", code, errs)
	}
	testenv.RequireTool(t, "unsquashfs")
	list, err := exec.Command("unsquashfs", "-l", conf).CombinedOutput()
	if err != nil || !strings.Contains(string(list), "etc/tool.conf") || strings.Contains(string(list), "usr/") {
		t.Fatalf("confext content: %v\n%s", err, list)
	}
	rel, err := exec.Command("unsquashfs", "-cat", conf, "etc/extension-release.d/extension-release.tool").CombinedOutput()
	if err != nil || !strings.Contains(string(rel), "ID=fedora") || !strings.Contains(string(rel), "VERSION_ID=42") {
		t.Fatalf("confext release: %v\n%s", err, rel)
	}
}

// TestBuildFromImageScratchFull: the tree is extracted on tmpfs when it
// looks small enough; a layer that unpacks to more than the tmpfs holds
// (4 MiB of zeros, a few KiB compressed, against a 1 MiB /dev/shm in a
// private mount namespace) is extracted again next to the output, and the
// build succeeds with nothing left in either place.
func TestBuildFromImageScratchFull(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireTool(t, "unshare")
	testenv.RequireTool(t, "mksquashfs")
	t.Setenv("DOCKER_CONFIG", t.TempDir())
	bin := testenv.BuildSysext(t)
	reg := ocitest.NewOlareg(t)
	baseLayer := [][2]string{{"usr/", ""}, {"usr/lib/", ""}, {"usr/lib/os-release", "ID=fedora\nVERSION_ID=42\n"}}
	added := [][2]string{{"usr/", ""}, {"usr/lib/", ""}, {"usr/lib/big/", ""}, {"usr/lib/big/zeros", strings.Repeat("\x00", 4<<20)}}
	base := pushLayered(t, reg, "os/base:42", ocispec.ImageConfig{}, baseLayer)
	derived := pushLayered(t, reg, "os/big:1", ocispec.ImageConfig{}, baseLayer, added)
	out := testenv.TempDirNoLeak(t, ".#")
	script := `set -e
mount -t tmpfs -o size=1m tmpfs /dev/shm
"$0" build --from-image "$1" --base "$2" --name big --version 1 -o "$3/"
test -z "$(ls -A /dev/shm)" || { echo "left in /dev/shm: $(ls -A /dev/shm)" >&2; exit 1; }`
	cmd := exec.Command("unshare", "-m", "sh", "-c", script, bin, derived, base, out)
	cmd.Env = os.Environ()
	got, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("build with a full /dev/shm: %v\n%s", err, got)
	}
	if !strings.Contains(string(got), "/dev/shm ran out of space") {
		t.Fatalf("no word of the fallback:\n%s", got)
	}
	ents, err := os.ReadDir(out)
	if err != nil || len(ents) != 1 || ents[0].Name() != "big-1-x86-64.raw" {
		t.Fatalf("output dir holds %v (%v), want only the image", ents, err)
	}
}
