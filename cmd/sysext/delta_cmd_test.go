package main

import (
	"crypto/rand"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/sysext/sysext/extension"
	"github.com/sysext/sysext/oci/ocitest"
)

// The delta path from the command line: push attaches chunk indexes (or
// not, --no-chunk-index; then 'sysext chunk-index' attaches them), update
// reports the bytes downloaded and reused in --json and in its line, and
// --no-delta downloads the whole image.
func TestDeltaCommands(t *testing.T) {
	t.Setenv("DOCKER_CONFIG", t.TempDir())
	arch := extension.HostArch()
	shared := make([]byte, 3<<20)
	rand.Read(shared)
	img := func(v string) string {
		return ocitest.Squashfs(t, ocitest.Meta("cmddelta", v, arch), append(append([]byte{}, shared...), []byte("version "+v)...))
	}
	v1, v2, v3 := img("1.0"), img("2.0"), img("3.0")
	ref := ocitest.NewLayout(t, "stable").String()
	out, errs, code := runCLI(t, "push", "--json", "--no-chunk-index", v1, ref)
	if code != 0 || strings.Contains(out, "chunk_index") {
		t.Fatalf("push --no-chunk-index: %d %s %s", code, out, errs)
	}
	// The index goes on afterwards; a second run changes nothing.
	out, errs, code = runCLI(t, "chunk-index", ref)
	if code != 0 || !strings.Contains(out, "attached a chunk index of") {
		t.Fatalf("chunk-index: %d %s %s", code, out, errs)
	}
	out, _, code = runCLI(t, "chunk-index", "--json", ref)
	var att []struct {
		Attached bool `json:"attached"`
		Chunks   int  `json:"chunks"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &att) != nil || len(att) != 1 || att[0].Attached || att[0].Chunks == 0 {
		t.Fatalf("chunk-index again: %d %s", code, out)
	}
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "etc"), 0o755)
	os.WriteFile(filepath.Join(root, "etc/os-release"), []byte("ID=debian\nVERSION_ID=12\n"), 0o644)
	if _, errs, code := runCLI(t, "pull", ref, "--root", root, "--insecure-allow-unsigned"); code != 0 {
		t.Fatalf("pull: %s", errs)
	}
	out, errs, code = runCLI(t, "push", "--json", v2, ref)
	if code != 0 || !strings.Contains(out, `"chunk_index": "sha256:`) {
		t.Fatalf("push: %d %s %s", code, out, errs)
	}
	out, errs, code = runCLI(t, "update", "--all", "--root", root, "--json")
	var rs []struct {
		Action     string `json:"action"`
		Downloaded int64  `json:"downloaded"`
		Reused     int64  `json:"reused"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &rs) != nil || len(rs) != 1 || rs[0].Action != "updated" {
		t.Fatalf("update: %d %s %s", code, out, errs)
	}
	size := func(p string) int64 { fi, _ := os.Stat(p); return fi.Size() }
	if rs[0].Reused < int64(len(shared))*9/10 || rs[0].Downloaded == 0 || rs[0].Downloaded > size(v2)/4 {
		t.Fatalf("update: downloaded %d, reused %d of %d", rs[0].Downloaded, rs[0].Reused, size(v2))
	}
	if _, errs, code := runCLI(t, "push", v3, ref); code != 0 {
		t.Fatalf("push: %s", errs)
	}
	out, errs, code = runCLI(t, "update", "--all", "--root", root)
	if code != 0 || !strings.Contains(out, "updated from 2.0") || !strings.Contains(out, "downloaded") || !strings.Contains(out, "reused") {
		t.Fatalf("update: %d %s %s", code, out, errs)
	}
	if !strings.Contains(errs, "delta download of") {
		t.Fatalf("no line says what the delta fetches: %s", errs)
	}
	// The progress lines count the fetched bytes and say what was reused.
	if !regexp.MustCompile(`download \(\+[0-9.]+ MiB reused\): 100%`).MatchString(errs) {
		t.Fatalf("the progress does not say what was reused: %s", errs)
	}
	if _, errs, code := runCLI(t, "rollback", "cmddelta", "--root", root); code != 0 {
		t.Fatalf("rollback: %s", errs)
	}
	if _, errs, code := runCLI(t, "gc", "--keep", "1", "--root", root); code != 0 {
		t.Fatalf("gc: %s", errs)
	}
	out, errs, code = runCLI(t, "pull", ref, "--root", root, "--insecure-allow-unsigned", "--no-delta", "--json")
	var r struct {
		Action     string `json:"action"`
		Downloaded int64  `json:"downloaded"`
		Reused     int64  `json:"reused"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &r) != nil || r.Action != "updated" || r.Reused != 0 || r.Downloaded != size(v3) {
		t.Fatalf("pull --no-delta: %d %s %s", code, out, errs)
	}
}
