package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2"

	"github.com/sysext/sysext/internal/testenv"
	"github.com/sysext/sysext/oci"
	"github.com/sysext/sysext/oci/ocitest"
)

// pushTwoLayers pushes an image whose second layer deletes a file of the
// first, and returns its reference.
func pushTwoLayers(t *testing.T, reg *ocitest.Registry) string {
	t.Helper()
	return pushLayered(t, reg, "img/tool:1", ocispec.ImageConfig{Env: []string{"TOOL_HOME=/usr/share/tool"}},
		[][2]string{{"usr/", ""}, {"usr/bin/", ""}, {"usr/bin/tool", "#!/bin/sh\necho tool 1.0\n"}, {"usr/bin/old", "x"}},
		[][2]string{{"usr/bin/.wh.old", ""}})
}

func TestRootfsAndFlatwrapCommands(t *testing.T) {
	t.Setenv("DOCKER_CONFIG", t.TempDir())
	reg := ocitest.NewOlareg(t)
	ref := pushTwoLayers(t, reg)
	dir := filepath.Join(t.TempDir(), "rootfs")

	out, errs, code := runCLI(t, "rootfs", ref, dir)
	if code != 0 {
		t.Fatalf("rootfs: %d %s", code, errs)
	}
	if !strings.Contains(out, "2 layers") {
		t.Fatalf("rootfs output: %s", out)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "usr/bin/tool")); !strings.Contains(string(b), "tool 1.0") {
		t.Fatalf("tool: %q", b)
	}
	if _, err := os.Lstat(filepath.Join(dir, "usr/bin/old")); err == nil {
		t.Fatal("whiteout not applied")
	}
	if _, errs, code = runCLI(t, "rootfs", ref, dir); code != 1 || !strings.Contains(errs, "not empty") {
		t.Fatalf("rootfs into a full directory: %d %s", code, errs)
	}
	if _, errs, code = runCLI(t, "rootfs", ref, dir+"2", "--platform", "vax"); code != 2 || !strings.Contains(errs, "--platform") {
		t.Fatalf("bad platform: %d %s", code, errs)
	}
	if _, errs, code = runCLI(t, "rootfs", ref, dir+"3", "--platform", "linux/arm64"); code != 1 || !strings.Contains(errs, "linux/amd64, not arm64") {
		t.Fatalf("other platform: %d %s", code, errs)
	}

	// The same image from an OCI layout.
	src, srcRef := reg.Open(t, "img/tool:1")
	layout := filepath.Join(t.TempDir(), "layout")
	dst, err := oci.Open(context.Background(), oci.Reference{Layout: layout, Tag: "1"}, oci.Options{CreateLayout: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := oras.Copy(context.Background(), src, srcRef.Tag, dst, "1", oras.DefaultCopyOptions); err != nil {
		t.Fatal(err)
	}
	if _, errs, code := runCLI(t, "rootfs", "oci:"+layout+":1", dir+"-layout"); code != 0 {
		t.Fatalf("rootfs from a layout: %d %s", code, errs)
	}
	if b, _ := os.ReadFile(filepath.Join(dir+"-layout", "usr/bin/tool")); !strings.Contains(string(b), "tool 1.0") {
		t.Fatalf("tool from the layout: %q", b)
	}

	testenv.RequireTool(t, "mksquashfs")
	outDir := testenv.TempDirNoLeak(t, ".#")
	out, errs, code = runCLI(t, "flatwrap", dir, "tool", "/usr/bin/tool", "--version", "1.0", "-o", outDir, "--json")
	if code != 0 {
		t.Fatalf("flatwrap: %d %s", code, errs)
	}
	var res struct{ Path, Name string }
	if err := json.Unmarshal([]byte(out), &res); err != nil || res.Name != "tool" {
		t.Fatalf("flatwrap --json: %q %v", out, err)
	}
	if _, err := os.Stat(res.Path); err != nil {
		t.Fatal(err)
	}
	if _, errs, code = runCLI(t, "flatwrap", dir, "tool2", "/usr/bin/tool", "--version", "1.0", "-o", outDir, "--etc", "maybe"); code != 2 {
		t.Fatalf("--etc maybe: %d %s", code, errs)
	}
	if _, errs, code = runCLI(t, "flix", dir, "tool3", "/usr/bin/tool", "--version", "1.0", "-o", outDir); code != 1 || !strings.Contains(errs, "flatwrap") {
		t.Fatalf("flix of a script: %d %s", code, errs)
	}
	if _, errs, code = runCLI(t, "flix", dir, "tool4", "usr/bin/tool", "--version", "1.0", "-o", outDir); code != 2 {
		t.Fatalf("relative program path: %d %s", code, errs)
	}
}
