package flix

import (
	"archive/tar"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/content/memory"

	"github.com/sysext/sysext/internal/tartest"
	"github.com/sysext/sysext/internal/testenv"
)

// shellLayer is a layer with the host's dash as /bin/sh and the libraries
// it needs, enough to run --run commands made of shell builtins.
func shellLayer(t *testing.T) testLayer {
	t.Helper()
	es := []ent{dir("bin"), dir("etc"), dir("proc"), dir("dev"), dir("lib"), dir("lib/x86_64-linux-gnu"), dir("lib64")}
	for name, host := range map[string]string{
		"bin/sh":                         "/bin/dash",
		"lib/x86_64-linux-gnu/libc.so.6": "/lib/x86_64-linux-gnu/libc.so.6",
		"lib64/ld-linux-x86-64.so.2":     "/lib64/ld-linux-x86-64.so.2",
	} {
		real, err := filepath.EvalSymlinks(host)
		if err != nil {
			t.Skipf("host lacks %s", host)
		}
		b, err := os.ReadFile(real)
		if err != nil {
			t.Fatal(err)
		}
		es = append(es, ent{Name: name, Type: tar.TypeReg, Body: string(b), Mode: 0o755})
	}
	return gzipLayer(t, tartest.Tar(t, es...))
}

func TestRootfsRun(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireTool(t, "unshare")
	if _, err := os.Stat("/bin/dash"); err != nil {
		t.Skip("needs /bin/dash")
	}
	s := memory.New()
	desc := pushImage(t, s, ocispec.Image{Config: ocispec.ImageConfig{Env: []string{"GREETING=from-config"}}}, false, shellLayer(t))
	base := t.TempDir()
	dir := filepath.Join(base, "rootfs")
	cmd := `echo "$GREETING" > /made-by-run
[ -e /proc/self/status ] && echo proc > /proc-ok
[ -c /dev/null ] && echo dev > /dev-ok
while read -r l; do echo "$l"; done < /etc/resolv.conf > /resolv-copy`
	if _, err := Rootfs(context.Background(), s, desc, dir, RootfsOptions{Run: cmd}); err != nil {
		t.Fatal(err)
	}
	for f, want := range map[string]string{"made-by-run": "from-config\n", "proc-ok": "proc\n", "dev-ok": "dev\n"} {
		if b, _ := os.ReadFile(filepath.Join(dir, f)); string(b) != want {
			t.Errorf("%s = %q, want %q", f, b, want)
		}
	}
	host, _ := os.ReadFile("/etc/resolv.conf")
	var lines []string
	for _, l := range strings.Split(strings.TrimRight(string(host), "\n"), "\n") {
		lines = append(lines, strings.TrimSpace(l))
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "resolv-copy")); strings.TrimSpace(string(b)) != strings.TrimSpace(strings.Join(lines, "\n")) {
		t.Errorf("resolv.conf inside = %q, host's %q", b, host)
	}
	if _, err := os.Lstat(filepath.Join(dir, "etc/resolv.conf")); err == nil {
		t.Error("the resolv.conf made for the command was left in the tree")
	}
	for _, d := range []string{"proc", "dev"} {
		if ents, _ := os.ReadDir(filepath.Join(dir, d)); len(ents) != 0 {
			t.Errorf("/%s still has content (a mount leaked?)", d)
		}
	}

	// A failing command leaves nothing.
	dir2 := filepath.Join(base, "failed")
	_, err := Rootfs(context.Background(), s, desc, dir2, RootfsOptions{Run: "exit 7"})
	if err == nil || !strings.Contains(err.Error(), "exit status 7") {
		t.Fatalf("err = %v", err)
	}
	if _, err := os.Lstat(dir2); err == nil {
		t.Fatal("tree left after a failing --run")
	}
	if ents, _ := os.ReadDir(base); len(ents) != 2 { // rootfs, rootfs.config.json
		t.Fatalf("left: %v", ents)
	}
}
