package flix_test

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sysext/sysext/builder"
	"github.com/sysext/sysext/extension"
	"github.com/sysext/sysext/flix"
	"github.com/sysext/sysext/internal/testenv"
)

const helloC = `#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
const char *greet(void);
int main(int argc, char **argv) {
	char cwd[4096];
	printf("%s version %s\n", greet(), VERSION);
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--cwd")) { if (getcwd(cwd, sizeof cwd)) printf("cwd=%s\n", cwd); }
		else if (!strcmp(argv[i], "--cat")) { int c; while ((c = getchar()) != EOF) putchar(c); }
		else if (!strncmp(argv[i], "--exit=", 7)) { fflush(stdout); return atoi(argv[i] + 7); }
		else printf("arg=[%s]\n", argv[i]);
	}
	return 0;
}
`

// muslRootfs builds a tiny rootfs with a musl program (behind a symlink)
// that needs a library of its own (found through an absolute DT_RUNPATH
// and an absolute symlink) which needs another ($ORIGIN, the directory the
// library was found in, not the symlink's target). It returns the
// rootfs and the version string only this build prints.
func muslRootfs(t *testing.T) (string, string) {
	t.Helper()
	testenv.RequireTool(t, "musl-gcc")
	muslLibc := "/lib/x86_64-linux-musl/libc.so"
	if _, err := os.Stat(muslLibc); err != nil {
		t.Skipf("musl's libc is not at %s", muslLibc)
	}
	src := t.TempDir()
	rootfs := filepath.Join(t.TempDir(), "rootfs")
	b := make([]byte, 6)
	rand.Read(b)
	version := "7.3.1-" + hex.EncodeToString(b)
	files := map[string]string{
		"hello.c": helloC,
		"greet.c": "const char *dep(void);\nconst char *greet(void) { return dep(); }\n",
		"dep.c":   "const char *dep(void) { return \"hello from flix-test\"; }\n",
	}
	for n, c := range files {
		if err := os.WriteFile(filepath.Join(src, n), []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range []string{"lib", "usr/bin", "usr/lib/greet/private", "usr/libexec/hello", "opt/greet", "etc", "tmp", "proc", "dev"} {
		os.MkdirAll(filepath.Join(rootfs, d), 0o755)
	}
	run := func(args ...string) {
		t.Helper()
		out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
		if err != nil {
			t.Fatalf("%v: %v\n%s", args, err, out)
		}
	}
	r := func(p string) string { return filepath.Join(rootfs, p) }
	run("cp", muslLibc, r("lib/ld-musl-x86_64.so.1"))
	os.Symlink("ld-musl-x86_64.so.1", r("lib/libc.so"))
	run("musl-gcc", "-shared", "-fPIC", "-Wl,-soname,libdep.so.1", "-o", r("usr/lib/greet/private/libdep.so.1"), filepath.Join(src, "dep.c"))
	run("musl-gcc", "-shared", "-fPIC", "-Wl,-soname,libgreet.so.1", "-Wl,-rpath,$ORIGIN/private", "-o", r("opt/greet/libgreet.so.1.0"),
		filepath.Join(src, "greet.c"), r("usr/lib/greet/private/libdep.so.1"))
	os.Symlink("/opt/greet/libgreet.so.1.0", r("usr/lib/greet/libgreet.so.1"))
	run("musl-gcc", `-DVERSION="`+version+`"`, "-o", r("usr/libexec/hello/hello"), filepath.Join(src, "hello.c"),
		r("opt/greet/libgreet.so.1.0"), "-Wl,-rpath,/usr/lib/greet", "-Wl,-rpath-link,"+r("usr/lib/greet/private"))
	os.Symlink("../libexec/hello/hello", r("usr/bin/hello"))
	os.WriteFile(r("usr/bin/script"), []byte("#!/bin/sh\necho hi\n"), 0o755)
	return rootfs, version
}

func buildOpts(t *testing.T, name string) builder.Options {
	return builder.Options{
		Meta: extension.Metadata{Name: name, Version: "1", Arch: extension.HostArch(), ID: extension.AnyID},
		// systemd-sysext wants the file named after extension-release.NAME.
		Output:      filepath.Join(testenv.TempDirNoLeak(t, ".#"), name+".raw"),
		Compression: "lz4",
	}
}

// hideHostMusl is run after the merge: the host has musl installed for
// musl-gcc, so its loader is hidden to prove the extension brings its own.
const hideHostMusl = `mount -t tmpfs tmpfs /usr/lib/x86_64-linux-musl
[ ! -e /lib/ld-musl-x86_64.so.1 ] || { echo "host musl still visible"; exit 1; }`

func requireMerge(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireTool(t, "systemd-sysext")
	testenv.RequireTool(t, "mksquashfs")
}

func TestFlixMuslMerged(t *testing.T) {
	requireMerge(t)
	testenv.RequireTool(t, "patchelf")
	rootfs, version := muslRootfs(t)
	res, err := flix.Flix(context.Background(), flix.Options{
		Rootfs: rootfs, Name: "flixtest", Programs: []flix.Program{{Path: "/usr/bin/hello"}},
	}, buildOpts(t, "flixtest"))
	if err != nil {
		t.Fatal(err)
	}
	out, err := testenv.MergeAndRun(t, []string{res.Path}, hideHostMusl,
		"test -e /usr/lib/extension-release.d/extension-release.flixtest",
		"readlink /usr/bin/hello",
		"hello a 'b c'")
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	for _, want := range []string{"../libexec/hello/hello\n", "hello from flix-test version " + version + "\n", "arg=[b c]\n"} {
		if !strings.Contains(out, want) {
			t.Fatalf("output lacks %q:\n%s", want, out)
		}
	}
}

func TestFlatwrapMuslMerged(t *testing.T) {
	requireMerge(t)
	rootfs, version := muslRootfs(t)
	res, err := flix.Flatwrap(context.Background(), flix.Options{
		Rootfs: rootfs, Name: "wraptest", Programs: []flix.Program{{Path: "/usr/bin/hello"}},
	}, buildOpts(t, "wraptest"))
	if err != nil {
		t.Fatal(err)
	}
	methods := []string{"", "unshare", "userns"}
	if _, err := exec.LookPath("bwrap"); err == nil {
		methods = append(methods, "bwrap")
	}
	var cmds []string
	cmds = append(cmds, hideHostMusl)
	for _, m := range methods {
		cmds = append(cmds, "echo method="+m,
			"cd /tmp && printf 'from stdin\\n' | SYSEXT_FLATWRAP_METHOD="+m+" hello --cwd --cat 'x y' --exit=3 || echo rc=$?")
	}
	// Not root: an unprivileged user namespace (or bwrap) must do.
	if p, err := exec.LookPath("setpriv"); err == nil {
		cmds = append(cmds, "echo method=nobody",
			"cd /tmp && printf 'from stdin\\n' | "+p+" --reuid=65534 --regid=65534 --clear-groups hello --cwd --cat 'x y' --exit=3 || echo rc=$?")
		methods = append(methods, "nobody")
	}
	out, err := testenv.MergeAndRun(t, []string{res.Path}, cmds...)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	want := "hello from flix-test version " + version + "\ncwd=/tmp\nfrom stdin\narg=[x y]\nrc=3\n"
	for _, m := range methods {
		if !strings.Contains(out, "method="+m+"\n"+want) {
			t.Fatalf("method %q: output lacks\n%s\ngot:\n%s", m, want, out)
		}
	}
}

func TestFlixRefusals(t *testing.T) {
	testenv.RequireTool(t, "patchelf")
	rootfs, _ := muslRootfs(t)
	os.WriteFile(filepath.Join(rootfs, "usr/bin/data"), []byte("not a program"), 0o755)
	os.Remove(filepath.Join(rootfs, "usr/lib/greet/private/libdep.so.1"))
	cases := []struct {
		name string
		prog string
		arch extension.Arch
		want string
	}{
		{"script", "/usr/bin/script", "", "script (#!/bin/sh): flix bundles ELF programs only; 'sysext flatwrap'"},
		{"not-elf", "/usr/bin/data", "", "not an ELF executable"},
		{"missing-lib", "/usr/bin/hello", "", "/usr/bin/hello needs libdep.so.1: not found"},
		{"wrong-arch", "/usr/bin/hello", "arm64", "is a program for x86-64, not arm64"},
		{"absent", "/usr/bin/nothing", "", "/usr/bin/nothing: not in"},
		{"not-under-usr", "/lib/ld-musl-x86_64.so.1", "", "not under /usr or /opt"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			bo := buildOpts(t, "refused")
			_, err := flix.Flix(context.Background(), flix.Options{
				Rootfs: rootfs, Name: "refused", Programs: []flix.Program{{Path: c.prog}}, Arch: c.arch,
			}, bo)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want %q", err, c.want)
			}
			if ents, _ := os.ReadDir(filepath.Dir(bo.Output)); len(ents) != 0 {
				t.Fatalf("written: %v", ents)
			}
		})
	}
}

// trixieRootfs returns a cached debootstrap of Debian 13 (minbase), made
// on first use (about 1.5 minutes with Debian's mirror reachable).
func trixieRootfs(t *testing.T) string {
	t.Helper()
	testenv.RequireRoot(t)
	testenv.RequireTool(t, "debootstrap")
	home, err := os.UserHomeDir()
	if err != nil {
		t.Fatal(err)
	}
	cache := filepath.Join(home, ".cache", "sysext", "debootstrap")
	dir := filepath.Join(cache, "trixie-minbase")
	if _, err := os.Stat(filepath.Join(dir, "usr", "bin", "ls")); err == nil {
		return dir
	}
	os.MkdirAll(cache, 0o755)
	tmp, err := os.MkdirTemp(cache, ".#trixie-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(tmp)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "debootstrap", "--variant=minbase", "trixie", tmp, mirror()).CombinedOutput()
	if err != nil {
		t.Fatalf("debootstrap trixie (needs Debian's mirror): %v\n%s", err, out)
	}
	if err := os.Chmod(tmp, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, dir); err != nil {
		t.Fatal(err)
	}
	return dir
}

// mirror is the Debian mirror apt uses here.
func mirror() string {
	for _, f := range []string{"/etc/apt/sources.list.d/debian.sources", "/etc/apt/sources.list"} {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(strings.NewReader(string(b)))
		for sc.Scan() {
			fs := strings.Fields(sc.Text())
			for _, w := range fs {
				if strings.HasPrefix(w, "http") && strings.HasSuffix(strings.TrimSuffix(w, "/"), "/debian") {
					return w
				}
			}
		}
	}
	return "http://deb.debian.org/debian"
}

func packageVersion(t *testing.T, rootfs, pkg string) string {
	b, err := os.ReadFile(filepath.Join(rootfs, "var/lib/dpkg/status"))
	if err != nil {
		t.Fatal(err)
	}
	for _, stanza := range strings.Split(string(b), "\n\n") {
		if strings.HasPrefix(stanza, "Package: "+pkg+"\n") {
			for _, l := range strings.Split(stanza, "\n") {
				if v, ok := strings.CutPrefix(l, "Version: "); ok {
					v, _, _ = strings.Cut(v, "-")
					return v
				}
			}
		}
	}
	t.Fatalf("%s not installed in %s", pkg, rootfs)
	return ""
}

// TestNewerReleaseMerged packs GNU ls from Debian 13 (glibc newer than
// this host's) with flix and with flatwrap, and runs both from the merged
// /usr.
func TestNewerReleaseMerged(t *testing.T) {
	requireMerge(t)
	testenv.RequireTool(t, "patchelf")
	if os.Getenv("SYSEXT_SKIP_DEBOOTSTRAP") != "" {
		t.Skip("SYSEXT_SKIP_DEBOOTSTRAP is set")
	}
	rootfs := trixieRootfs(t)
	want := "ls (GNU coreutils) " + packageVersion(t, rootfs, "coreutils") + "\n"
	host, _ := exec.Command("ls", "--version").Output()
	if strings.HasPrefix(string(host), want) {
		t.Skipf("the host's ls is the same version (%s)", want)
	}
	ctx := context.Background()
	fx, err := flix.Flix(ctx, flix.Options{Rootfs: rootfs, Name: "lsflix",
		Programs: []flix.Program{{Path: "/usr/bin/ls", Dest: "/usr/bin/ls-flix"}}}, buildOpts(t, "lsflix"))
	if err != nil {
		t.Fatal(err)
	}
	fw, err := flix.Flatwrap(ctx, flix.Options{Rootfs: rootfs, Name: "lswrap",
		Programs: []flix.Program{{Path: "/usr/bin/ls", Dest: "/usr/bin/ls-wrap"}}}, buildOpts(t, "lswrap"))
	if err != nil {
		t.Fatal(err)
	}
	out, err := testenv.MergeAndRun(t, []string{fx.Path, fw.Path},
		"echo flix; ls-flix --version | head -1", "echo wrap; ls-wrap --version | head -1", "ls-wrap -d /proc/self")
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	for _, w := range []string{"flix\n" + want, "wrap\n" + want, "/proc/self\n"} {
		if !strings.Contains(out, w) {
			t.Fatalf("output lacks %q:\n%s", w, out)
		}
	}
}
