package flix

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/sysext/sysext/internal/extract"

	"github.com/sysext/sysext/internal/testenv"
)

// TestSearchPathsInsideRoot: ld.so.conf, its include globs and musl's path
// file are read inside the rootfs, through symlinks resolved there.
func TestSearchPathsInsideRoot(t *testing.T) {
	dir := t.TempDir()
	w := func(p, s string) {
		os.MkdirAll(filepath.Dir(filepath.Join(dir, p)), 0o755)
		os.WriteFile(filepath.Join(dir, p), []byte(s), 0o644)
	}
	w("etc/ld.so.conf", "# comment\ninclude /etc/ld.so.conf.d/*.conf\n/opt/first/lib\n")
	w("real-conf/b.conf", "/opt/b/lib:/opt/b2/lib\n")
	w("real-conf/a.conf", "include ../other.conf\n/opt/a/lib # trailing\n")
	w("other.conf", "/opt/other\n")
	os.Symlink("/real-conf", filepath.Join(dir, "etc/ld.so.conf.d")) // absolute: inside the root
	w("etc/ld-musl-x86_64.path", "/opt/musl:/opt/musl2\n")
	r, _ := extract.OpenRoot(dir, false)
	defer r.Close()
	got := strings.Join(searchPaths(r, elfArches["x86-64"]), " ")
	want := "/opt/other /opt/a/lib /opt/b/lib /opt/b2/lib /opt/first/lib /opt/musl /opt/musl2 /lib/x86_64-linux-gnu /usr/lib/x86_64-linux-gnu /lib64 /usr/lib64 /lib /usr/lib /usr/local/lib"
	if got != want {
		t.Fatalf("search paths\n got %s\nwant %s", got, want)
	}
}

func TestWrapperScript(t *testing.T) {
	s := wrapperScript("tool", "/usr/lib/sysext-flatwrap/tool", "/usr/bin/it's", []string{"/etc", "/dev", "/tmp"},
		[]string{"PATH=/x", "JAVA_HOME=/opt/java", "bad-name=1", "QUOTE=a'b"})
	for _, want := range []string{
		`prog='/usr/bin/it'\''s'`,
		`[ -n "${JAVA_HOME+set}" ] || export JAVA_HOME='/opt/java'`,
		`[ -n "${QUOTE+set}" ] || export QUOTE='a'\''b'`,
		"--dev-bind /dev /dev",
		"--bind-try '/etc' '/etc'",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("wrapper lacks %q:\n%s", want, s)
		}
	}
	if strings.Contains(s, "bad-name") || strings.Contains(s, "PATH=/x") || strings.Contains(s, "'/x'") {
		t.Errorf("wrapper sets what it must not:\n%s", s)
	}
	if out, err := exec.Command("sh", "-n", "-c", s).CombinedOutput(); err != nil {
		t.Fatalf("sh -n: %v %s", err, out)
	}
}

// TestStageFlixExtraLibAndStatic: --extra-lib bundles a library nobody
// links (dlopen) with a runpath; a static program is copied unchanged.
func TestStageFlixExtraLibAndStatic(t *testing.T) {
	testenv.RequireTool(t, "patchelf")
	testenv.RequireTool(t, "musl-gcc")
	src := t.TempDir()
	rootfs := t.TempDir()
	os.MkdirAll(filepath.Join(rootfs, "usr/lib/plugins"), 0o755)
	os.MkdirAll(filepath.Join(rootfs, "usr/bin"), 0o755)
	os.WriteFile(filepath.Join(src, "p.c"), []byte("int plugin(void) { return 42; }\n"), 0o644)
	os.WriteFile(filepath.Join(src, "s.c"), []byte("int main(void) { return 0; }\n"), 0o644)
	for _, args := range [][]string{
		{"-shared", "-fPIC", "-o", filepath.Join(rootfs, "usr/lib/plugins/libplugin.so"), filepath.Join(src, "p.c")},
		{"-static", "-o", filepath.Join(rootfs, "usr/bin/static"), filepath.Join(src, "s.c")},
	} {
		if out, err := exec.Command("musl-gcc", args...).CombinedOutput(); err != nil {
			t.Fatalf("musl-gcc: %v %s", err, out)
		}
	}
	// musl's libc.so, which the plugin needs.
	os.MkdirAll(filepath.Join(rootfs, "lib"), 0o755)
	if out, err := exec.Command("cp", "/lib/x86_64-linux-musl/libc.so", filepath.Join(rootfs, "lib/libc.so")).CombinedOutput(); err != nil {
		t.Skipf("no musl libc: %s", out)
	}
	tree := t.TempDir()
	err := StageFlix(context.Background(), tree, Options{Rootfs: rootfs, Name: "plug", Arch: "x86-64",
		Programs: []Program{{Path: "/usr/bin/static"}}, ExtraLibs: []string{"/usr/lib/plugins/libplugin.so"}})
	if err != nil {
		t.Fatal(err)
	}
	a, _ := os.ReadFile(filepath.Join(rootfs, "usr/bin/static"))
	b, _ := os.ReadFile(filepath.Join(tree, "usr/bin/static"))
	if string(a) != string(b) {
		t.Fatal("the static program was changed")
	}
	lib := filepath.Join(tree, FlixPrefix, "plug", "libplugin.so")
	out, err := exec.Command("patchelf", "--print-rpath", lib).CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "$ORIGIN" {
		t.Fatalf("extra lib runpath: %q %v", out, err)
	}
	if _, err := os.Stat(filepath.Join(tree, FlixPrefix, "plug", "libc.so")); err != nil {
		t.Fatalf("the extra lib's dependency: %v", err)
	}
}

// TestWrapperSaysWhenNothingWorks: no bwrap and no unshare on PATH: the
// wrapper says why and exits 126; an unknown forced method too.
func TestWrapperSaysWhenNothingWorks(t *testing.T) {
	bin := t.TempDir()
	for _, tool := range []string{"id"} {
		p, err := exec.LookPath(tool)
		if err != nil {
			t.Skipf("no %s", tool)
		}
		os.Symlink(p, filepath.Join(bin, tool))
	}
	script := filepath.Join(t.TempDir(), "wrapper")
	os.WriteFile(script, []byte(wrapperScript("tool", "/nonexistent/root", "/usr/bin/tool", []string{"/dev"}, nil)), 0o755)
	for _, c := range []struct{ method, want string }{
		{"", "tool: cannot run /usr/bin/tool in its root /nonexistent/root: bwrap is not installed"},
		{"bogus", "SYSEXT_FLATWRAP_METHOD=bogus: use bwrap, unshare or userns"},
	} {
		cmd := exec.Command("/bin/sh", script, "arg")
		cmd.Env = []string{"PATH=" + bin, "SYSEXT_FLATWRAP_METHOD=" + c.method}
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 126 || !strings.Contains(string(out), c.want) {
			t.Fatalf("method %q: %v\n%s", c.method, err, out)
		}
	}
}

// TestStageFlatwrapStripsSetuid: a set-user-ID program of the rootfs is
// not set-user-ID in the extension (built all-root, it would be setuid
// root on the host), and the rootfs itself is left as it was.
func TestStageFlatwrapStripsSetuid(t *testing.T) {
	rootfs := t.TempDir()
	os.MkdirAll(filepath.Join(rootfs, "usr/bin"), 0o755)
	su := filepath.Join(rootfs, "usr/bin/su")
	os.WriteFile(su, []byte("#!/bin/sh\n"), 0o755)
	if err := os.Chmod(su, 0o755|os.ModeSetuid); err != nil {
		t.Fatal(err)
	}
	tree := t.TempDir()
	if err := StageFlatwrap(context.Background(), tree, Options{Rootfs: rootfs, Name: "w", Arch: "x86-64",
		Programs: []Program{{Path: "/usr/bin/su", Dest: "/usr/bin/w-su"}}}); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(tree, FlatwrapPrefix, "w/usr/bin/su"))
	if err != nil || fi.Mode()&os.ModeSetuid != 0 || fi.Mode().Perm() != 0o755 {
		t.Fatalf("copy: %v %v", fi.Mode(), err)
	}
	if fi, _ := os.Stat(su); fi.Mode()&os.ModeSetuid == 0 {
		t.Fatal("the rootfs was changed")
	}
	if fi, err := os.Stat(filepath.Join(tree, FlatwrapPrefix, "w")); err != nil || fi.Mode().Perm() != 0o755 {
		t.Fatalf("root of the copy: %v %v", fi.Mode(), err)
	}
	for _, d := range DefaultHostDirs {
		if fi, err := os.Lstat(filepath.Join(tree, FlatwrapPrefix, "w", d)); err != nil || !fi.IsDir() {
			t.Fatalf("mount point %s: %v", d, err)
		}
	}
}

// TestStageFlatwrapKeepsHardLinksAcrossFilesystems: flatwrap's copy of a
// rootfs on another filesystem (copies, not links) keeps a hard-link pair
// one inode (issue 17: the builder's staging kept hard links, flatwrap's
// copy did not; both now use extract.CopyTree).
func TestStageFlatwrapKeepsHardLinksAcrossFilesystems(t *testing.T) {
	rootfs, err := os.MkdirTemp("/dev/shm", "sysext-flatwrap-test-")
	if err != nil {
		t.Skipf("no /dev/shm to put the rootfs on another filesystem: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(rootfs) })
	os.MkdirAll(filepath.Join(rootfs, "usr/bin"), 0o755)
	os.WriteFile(filepath.Join(rootfs, "usr/bin/a"), []byte("#!/bin/sh\n"), 0o755)
	if err := os.Link(filepath.Join(rootfs, "usr/bin/a"), filepath.Join(rootfs, "usr/bin/b")); err != nil {
		t.Fatal(err)
	}
	tree := t.TempDir()
	if err := StageFlatwrap(context.Background(), tree, Options{Rootfs: rootfs, Name: "w", Arch: "x86-64", Programs: []Program{{Path: "/usr/bin/a"}}}); err != nil {
		t.Fatal(err)
	}
	ino := func(p string) uint64 {
		fi, err := os.Lstat(p)
		if err != nil {
			t.Fatal(err)
		}
		return fi.Sys().(*syscall.Stat_t).Ino
	}
	d := filepath.Join(tree, FlatwrapPrefix, "w/usr/bin")
	if ino(filepath.Join(d, "a")) != ino(filepath.Join(d, "b")) {
		t.Fatal("the hard-link pair became two files in flatwrap's copy")
	}
	if ino(filepath.Join(d, "a")) == ino(filepath.Join(rootfs, "usr/bin/a")) {
		t.Fatal("linked across filesystems?")
	}
}
