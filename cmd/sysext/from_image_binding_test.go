package main

import (
	"encoding/json"
	"strings"
	"testing"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/sysext/sysext/internal/testenv"
	"github.com/sysext/sysext/oci/ocitest"
)

// The base's IMAGE_ID/IMAGE_VERSION travel: build --from-image puts them in
// the extension-release, push records them as annotations, inspect REF
// shows them.
func TestFromImageBindingInManifest(t *testing.T) {
	testenv.RequireTool(t, "mksquashfs")
	t.Setenv("DOCKER_CONFIG", t.TempDir())
	reg := ocitest.NewOlareg(t)
	baseLayer := [][2]string{{"usr/", ""}, {"usr/lib/", ""}, {"usr/lib/os-release", "ID=fedora\nVERSION_ID=42\nIMAGE_ID=silverblue\nIMAGE_VERSION=42.20250301.0\n"}}
	added := [][2]string{{"usr/", ""}, {"usr/bin/", ""}, {"usr/bin/tool", "#!/bin/sh\n"}}
	base := pushLayered(t, reg, "os/base:42", ocispec.ImageConfig{}, baseLayer)
	derived := pushLayered(t, reg, "os/tool:1", ocispec.ImageConfig{}, baseLayer, added)
	out := testenv.TempDirNoLeak(t, ".#")
	stdout, errs, code := runCLI(t, "build", "--from-image", derived, "--base", base, "--name", "tool", "--version", "1", "--arch", "x86-64", "-o", out+"/", "--json")
	if code != 0 {
		t.Fatalf("build: %d %s", code, errs)
	}
	var built struct {
		Path    string
		Release map[string]string
	}
	if err := json.Unmarshal([]byte(stdout), &built); err != nil || built.Release["IMAGE_ID"] != "silverblue" || built.Release["IMAGE_VERSION"] != "42.20250301.0" {
		t.Fatalf("the image's extension-release: %s (%v)", stdout, err)
	}
	if !strings.Contains(errs, "IMAGE_VERSION=42.20250301.0") {
		t.Fatalf("stderr: %s", errs)
	}
	ref := reg.Ref("ext/tool:1")
	if _, errs, code := runCLI(t, "push", built.Path, ref); code != 0 {
		t.Fatalf("push: %d %s", code, errs)
	}
	stdout, errs, code = runCLI(t, "inspect", ref, "--json")
	if code != 0 {
		t.Fatalf("inspect: %d %s", code, errs)
	}
	var j refJSON
	if err := json.Unmarshal([]byte(stdout), &j); err != nil || len(j.Platforms) != 1 {
		t.Fatalf("inspect --json: %v %s", err, stdout)
	}
	p := j.Platforms[0]
	if p.Annotations["org.sysext.extension.image-id"] != "silverblue" || p.Annotations["org.sysext.extension.image-version"] != "42.20250301.0" {
		t.Fatalf("manifest annotations %v", p.Annotations)
	}
	if p.Extension == nil || p.Extension.Release["IMAGE_ID"] != "silverblue" {
		t.Fatalf("inspect extension %+v", p.Extension)
	}
	stdout, _, code = runCLI(t, "inspect", ref)
	if code != 0 || !strings.Contains(stdout, "IMAGE_ID:     silverblue") || !strings.Contains(stdout, "IMAGE_VERSION: 42.20250301.0") {
		t.Fatalf("inspect: %d\n%s", code, stdout)
	}
}
