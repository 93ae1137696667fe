package main

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/sysext/sysext/extension"
	"github.com/sysext/sysext/oci/ocitest"
)

// complete runs cobra's __complete, as the shells' scripts do, and returns
// the values it offers (without their descriptions).
func complete(t *testing.T, args ...string) []string {
	t.Helper()
	out, errs, code := runCLI(t, append([]string{"__complete"}, args...)...)
	if code != 0 {
		t.Fatalf("__complete %v: exit %d %s", args, code, errs)
	}
	var values []string
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if strings.HasPrefix(l, ":") {
			break
		}
		values = append(values, strings.SplitN(l, "\t", 2)[0])
	}
	return values
}

func TestCompletionOfValues(t *testing.T) {
	has := func(args []string, want ...string) {
		t.Helper()
		got := complete(t, args...)
		for _, w := range want {
			if !slices.Contains(got, w) {
				t.Errorf("completing %v: %v lacks %q", args, got, w)
			}
		}
	}
	lacks := func(args []string, not ...string) {
		t.Helper()
		got := complete(t, args...)
		for _, w := range not {
			if slices.Contains(got, w) {
				t.Errorf("completing %v: %v offers %q", args, got, w)
			}
		}
	}
	has([]string{"build", "tree", "--format", ""}, "squashfs", "erofs")
	has([]string{"bake", "docker", "--format", ""}, "squashfs", "erofs")
	has([]string{"build", "tree", "--arch", ""}, "x86-64", "arm64", "riscv64", "_any")
	has([]string{"flix", "r", "n", "--arch", ""}, "x86-64", "arm64")
	has([]string{"build", "tree", "--compression", ""}, "zstd", "xz", "gzip")
	has([]string{"build", "tree", "--format", "erofs", "--compression", ""}, "lz4hc", "lz4", "lzma", "zstd")
	lacks([]string{"build", "tree", "--format", "erofs", "--compression", ""}, "xz", "gzip")
	has([]string{"bake", "docker", "--compression", ""}, "zstd")
	has([]string{"bake", ""}, "docker", "kubernetes", "tailscale")
	has([]string{"recipes", "show", ""}, "docker")
	has([]string{"butane", "ghcr.io/a/b:1", "--variant", ""}, "flatcar", "fcos")
	has([]string{"fetch", "ghcr.io/a/b:1", "--platform", ""}, "arm64")

	// Installed names come from the store under --root, declared ones from
	// its extensions.d; completing writes nothing there.
	t.Setenv("DOCKER_CONFIG", t.TempDir())
	ref := ocitest.NewLayout(t, "1").String()
	img := ocitest.Squashfs(t, ocitest.Meta("hello", "1.0", extension.HostArch()), []byte("x"))
	if _, errs, code := runCLI(t, "push", "-q", img, ref); code != 0 {
		t.Fatal(errs)
	}
	root := t.TempDir()
	writeFile(t, filepath.Join(root, "etc/os-release"), "ID=debian\nVERSION_ID=12\n")
	if _, errs, code := runCLI(t, "pull", ref, "--root", root, "--insecure-allow-unsigned", "-q"); code != 0 {
		t.Fatal(errs)
	}
	writeFile(t, filepath.Join(root, "etc/sysext/extensions.d/tools.conf"), "[Extension]\nSource=ghcr.io/acme/tools:1\n")
	lock := filepath.Join(root, "var/lib/sysext/lock")
	os.Remove(lock)
	for _, cmd := range []string{"update", "rollback", "remove"} {
		has([]string{cmd, "--root", root, ""}, "hello")
	}
	lacks([]string{"update", "--root", root, "hello", ""}, "hello")
	lacks([]string{"rollback", "--root", root, "hello", ""}, "hello")
	has([]string{"sync", "--root", root, ""}, "tools")
	if _, err := os.Stat(lock); err == nil {
		t.Error("completing created the lock file")
	}
	if got := complete(t, "update", "--root", filepath.Join(root, "nothing-here"), ""); len(got) != 0 {
		t.Errorf("nothing installed: %v", got)
	}
}

// TestSyncNames: sync NAME syncs only that declaration; a name nothing
// declares is a usage error.
func TestSyncNames(t *testing.T) {
	ref := ocitest.NewLayout(t, "1").String()
	img := ocitest.Squashfs(t, ocitest.Meta("hello", "1.0", extension.HostArch()), []byte("x"))
	if _, errs, code := runCLI(t, "push", "-q", img, ref); code != 0 {
		t.Fatal(errs)
	}
	root := t.TempDir()
	writeFile(t, filepath.Join(root, "etc/os-release"), "ID=debian\nVERSION_ID=12\n")
	writeFile(t, filepath.Join(root, "etc/sysext/extensions.d/hello.conf"), "[Extension]\nSource="+ref+"\nInsecureAllowUnsigned=yes\n")
	writeFile(t, filepath.Join(root, "etc/sysext/extensions.d/other.conf"), "[Extension]\nSource=localhost:1/none:1\nInsecureAllowUnsigned=yes\n")
	out, errs, code := runCLI(t, "sync", "hello", "--root", root)
	if code != 0 || !strings.Contains(out, "hello 1.0: pulled") || strings.Contains(out+errs, "other") {
		t.Fatalf("sync hello: exit %d\n%s%s", code, out, errs)
	}
	if _, errs, code := runCLI(t, "sync", "nosuch", "--root", root); code != exitUsage || !strings.Contains(errs, "nosuch: not declared") {
		t.Fatalf("sync nosuch: exit %d %s", code, errs)
	}
}
