package main

import (
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/sysext/sysext/extension"
	"github.com/sysext/sysext/internal/testenv"
)

// exampleTree is the repository's example extension.
func exampleTree(t *testing.T) string {
	t.Helper()
	p, err := filepath.Abs("../../testdata/example")
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestBuildAndInspectCommands(t *testing.T) {
	testenv.RequireTool(t, "mksquashfs")
	testenv.RequireTool(t, "mkfs.erofs")
	for _, format := range []string{"squashfs", "erofs"} {
		t.Run(format, func(t *testing.T) {
			out := testenv.TempDirNoLeak(t, ".#")
			args := []string{"build", exampleTree(t), "--name", "sysext-hello", "--version", "1.0",
				"--arch", "amd64", "--format", format, "--enable", "sysext-hello.service", "-o", out + "/", "--json"}
			wantDigest := format == "squashfs" // the other build shows that the hash is opt-in
			if wantDigest {
				args = append(args, "--digest")
			}
			stdout, stderr, code := runCLI(t, args...)
			if code != exitOK {
				t.Fatalf("build exit %d: %s", code, stderr)
			}
			var built imageJSON
			if err := json.Unmarshal([]byte(stdout), &built); err != nil {
				t.Fatalf("build --json printed %q: %v", stdout, err)
			}
			img := filepath.Join(out, "sysext-hello-1.0-x86-64.raw")
			if built.Path != img || built.Format != format || built.Architecture != "x86-64" || !built.ReloadManager || strings.HasPrefix(built.Digest, "sha256:") != wantDigest {
				t.Fatalf("build --json = %+v", built)
			}

			osRel := filepath.Join(t.TempDir(), "os-release")
			os.WriteFile(osRel, []byte("ID=debian\nVERSION_ID=12\n"), 0o644)
			stdout, stderr, code = runCLI(t, "inspect", img, "--json", "--os-release", osRel)
			if code != exitOK {
				t.Fatalf("inspect exit %d: %s", code, stderr)
			}
			var got imageJSON
			if err := json.Unmarshal([]byte(stdout), &got); err != nil {
				t.Fatal(err)
			}
			data, err := os.ReadFile(img)
			if err != nil {
				t.Fatal(err)
			}
			fileDigest := fmt.Sprintf("sha256:%x", sha256.Sum256(data))
			if wantDigest && built.Digest != fileDigest {
				t.Fatalf("build --digest printed %s, the file is %s", built.Digest, fileDigest)
			}
			if got.Name != "sysext-hello" || got.Version != "1.0" || got.Digest != fileDigest || got.Size != built.Size ||
				strings.Join(got.Upholds, ",") != "sysext-hello.service" || got.Compatible == nil {
				t.Fatalf("inspect --json = %+v", got)
			}
			if got.Compatible.OK != (hostArchIs("x86-64")) {
				t.Fatalf("compatible = %+v", got.Compatible)
			}

			stdout, _, code = runCLI(t, "inspect", img, "--os-release", osRel)
			for _, want := range []string{"name:           sysext-hello", "format:         " + format, "digest:         sha256:", "upholds:        sysext-hello.service"} {
				if code != exitOK || !strings.Contains(stdout, want) {
					t.Fatalf("inspect printed (exit %d):\n%s\nwant %q", code, stdout, want)
				}
			}

			// A second build without --force: refused, exit 1, file kept.
			_, stderr, code = runCLI(t, "build", exampleTree(t), "--name", "sysext-hello", "--version", "1.0",
				"--arch", "x86-64", "--format", format, "-o", out)
			if code != exitFailure || !strings.Contains(stderr, "already exists: use --force") {
				t.Fatalf("second build: exit %d, %s", code, stderr)
			}
		})
	}
}

func hostArchIs(a string) bool { return hostArch() == a }

func TestInspectIncompatible(t *testing.T) {
	testenv.RequireTool(t, "mksquashfs")
	out := t.TempDir()
	_, stderr, code := runCLI(t, "build", exampleTree(t), "--name", "sysext-hello", "--version", "1.0",
		"--os", "fedora", "--version-id", "39", "-o", out)
	if code != exitOK {
		t.Fatalf("build: %s", stderr)
	}
	img := filepath.Join(out, "sysext-hello-1.0-"+hostArch()+".raw")
	osRel := filepath.Join(t.TempDir(), "os-release")
	os.WriteFile(osRel, []byte("ID=fedora\nVERSION_ID=40\n"), 0o644)
	stdout, _, code := runCLI(t, "inspect", img, "--os-release", osRel)
	if code != exitOK || !strings.Contains(stdout, "merges:         no") || !strings.Contains(stdout, "VERSION_ID=39 does not match the host's VERSION_ID=40") {
		t.Fatalf("inspect (exit %d):\n%s", code, stdout)
	}
}

func TestBuildCommandUsageErrors(t *testing.T) {
	tree := exampleTree(t)
	tests := []struct {
		args []string
		code int
		want string
	}{
		{[]string{"build", tree, "--version", "1"}, exitUsage, "--name is required"},
		{[]string{"build", tree, "--name", "x"}, exitUsage, "--version is required"},
		{[]string{"build", tree, "--name", "a/b", "--version", "1"}, exitUsage, "--name: extension name"},
		{[]string{"build", tree, "--name", "x", "--version", "1", "--arch", "sparc"}, exitUsage, "--arch: unknown architecture"},
		{[]string{"build", tree, "--name", "x", "--version", "1", "--scope", "everywhere"}, exitUsage, "--scope"},
		{[]string{"build", tree, "--name", "x", "--version", "1", "--format", "ext4"}, exitUsage, "--format ext4"},
		{[]string{"build", tree, "--name", "x", "--version", "1", "--os", "fedora"}, exitUsage, "--sysext-level or --version-id"},
		{[]string{"build", "--name", "x", "--version", "1"}, exitUsage, "accepts 1 arg"},
		{[]string{"build", tree, "--name", "x", "--version", "1", "--keep", "/usr"}, exitUsage, "need --from-image"},
		{[]string{"build", filepath.Join(tree, "usr"), "--name", "x", "--version", "1", "-o", t.TempDir()}, exitFailure, "systemd-sysext merges only usr/ and opt/"},
		{[]string{"inspect", filepath.Join(tree, "usr/bin/sysext-hello")}, exitFailure, "is not a squashfs, EROFS or GPT image"},
	}
	for _, tt := range tests {
		_, stderr, code := runCLI(t, tt.args...)
		if code != tt.code || !strings.Contains(stderr, tt.want) {
			t.Errorf("sysext %s: exit %d, %q; want exit %d and %q", strings.Join(tt.args, " "), code, stderr, tt.code, tt.want)
		}
	}
}

func hostArch() string { return string(extension.HostArch()) }

// TestDemoScript runs the README's main command (scripts/demo.sh, what
// `make demo` runs) against a freshly built binary: build, inspect, and as
// root a real merge in a private mount namespace.
func TestDemoScript(t *testing.T) {
	testenv.RequireTool(t, "mksquashfs")
	bin := testenv.BuildSysext(t)
	script, _ := filepath.Abs("../../scripts/demo.sh")
	cmd := exec.Command(script)
	cmd.Env = append(os.Environ(), "SYSEXT="+bin)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("demo.sh: %v\n%s", err, out)
	}
	for _, want := range []string{"built ", "merges:         yes"} {
		if !strings.Contains(string(out), want) {
			t.Fatalf("demo output lacks %q:\n%s", want, out)
		}
	}
	if os.Geteuid() == 0 && !strings.Contains(string(out), "demo: OK, the extension is merged and its program runs") {
		t.Fatalf("demo did not merge as root:\n%s", out)
	}
	// Its output goes to a pipe here: no terminal escapes in a log.
	if strings.Contains(string(out), "\x1b") {
		t.Fatalf("demo output has ANSI escapes though it is not a terminal:\n%q", out)
	}
}

// TestBuildEROFSUnprivileged: a user who is not root builds an EROFS image
// through the overlay view in a user namespace. The tree is on tmpfs and
// the output on the disk, so staging would have had to copy and warn;
// no warning means the overlay was used.
func TestBuildEROFSUnprivileged(t *testing.T) {
	testenv.RequireRoot(t)
	runuser := testenv.RequireTool(t, "runuser")
	testenv.RequireTool(t, "mkfs.erofs")
	testenv.RequireTool(t, "unshare")
	nobody, err := user.Lookup("nobody")
	if err != nil {
		t.Skipf("no user nobody: %v", err)
	}
	if out, err := exec.Command(runuser, "-u", "nobody", "--", "unshare", "--user", "--map-root-user", "--mount", "true").CombinedOutput(); err != nil {
		// A kernel setting, not a missing tool: such a machine stages.
		t.Skipf("user namespaces are closed to unprivileged users here: %v %s", err, out)
	}
	uid, _ := strconv.Atoi(nobody.Uid)
	bin := testenv.BuildSysext(t)
	os.Chmod(filepath.Dir(bin), 0o755)
	tree, err := os.MkdirTemp("/dev/shm", "sysext-test-tree-")
	if err != nil {
		t.Skipf("no /dev/shm: %v", err)
	}
	defer os.RemoveAll(tree)
	if out, err := exec.Command("cp", "-a", exampleTree(t)+"/.", tree).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v %s", err, out)
	}
	os.Chmod(tree, 0o755)
	out := t.TempDir()
	os.Chmod(filepath.Dir(out), 0o755)
	if err := os.Chown(out, uid, -1); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(runuser, "-u", "nobody", "--", bin, "build", tree, "--name", "sysext-hello", "--version", "1.0",
		"--arch", "x86-64", "--format", "erofs", "-o", out+"/", "--json")
	got, err := cmd.Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		t.Fatalf("build as nobody: %v\n%s%s", err, got, stderr)
	}
	var built imageJSON
	if err := json.Unmarshal(got, &built); err != nil {
		t.Fatalf("%s: %v", got, err)
	}
	if len(built.Warnings) != 0 || built.Format != "erofs" {
		t.Fatalf("build as nobody: %+v (a copy warning means the overlay was not used)", built)
	}
	ents, err := os.ReadDir(out)
	if err != nil || len(ents) != 1 {
		t.Fatalf("output dir holds %v (%v)", ents, err)
	}
}

// An EROFS image's compressor, and the kernel a node needs for it, is
// shown by build and inspect; a squashfs image's is not (every kernel
// with squashfs reads what mksquashfs writes by default).
func TestEROFSCompressionShown(t *testing.T) {
	t.Setenv("PATH", testenv.TrixieBin(t)+string(os.PathListSeparator)+os.Getenv("PATH"))
	for _, c := range []struct{ format, compression, want string }{
		{"erofs", "zstd:15", "compression:    zstd (nodes need Linux >= 6.10 with CONFIG_EROFS_FS_ZIP_ZSTD)"},
		{"erofs", "lzma", "compression:    lzma (nodes need Linux >= 5.16 with CONFIG_EROFS_FS_ZIP_LZMA)"},
		{"erofs", "deflate", "compression:    deflate (nodes need Linux >= 6.6 with CONFIG_EROFS_FS_ZIP_DEFLATE)"},
		{"erofs", "", "compression:    lz4 (nodes need Linux >= 5.4 with CONFIG_EROFS_FS_ZIP)"},
		{"erofs", "none", "compression:    none"},
		{"squashfs", "", ""},
	} {
		t.Run(c.format+" "+c.compression, func(t *testing.T) {
			out := t.TempDir()
			args := []string{"build", exampleTree(t), "--name", "sysext-hello", "--version", "1.0", "--format", c.format, "-o", out + "/"}
			if c.compression != "" {
				args = append(args, "--compression", c.compression)
			}
			stdout, stderr, code := runCLI(t, args...)
			if code != exitOK || (c.want != "" && !strings.Contains(stdout, c.want+"\n")) {
				t.Fatalf("build exit %d, printed:\n%s%s\nwant %q", code, stdout, stderr, c.want)
			}
			img := filepath.Join(out, "sysext-hello-1.0-"+hostArch()+".raw")
			stdout, stderr, code = runCLI(t, "inspect", img)
			if code != exitOK || (c.want != "" && !strings.Contains(stdout, c.want+"\n")) || (c.want == "" && strings.Contains(stdout, "compression:")) {
				t.Fatalf("inspect exit %d, printed:\n%s%s\nwant %q", code, stdout, stderr, c.want)
			}
			stdout, _, _ = runCLI(t, "inspect", img, "--json")
			var got imageJSON
			if err := json.Unmarshal([]byte(stdout), &got); err != nil {
				t.Fatal(err)
			}
			alg, _, _ := strings.Cut(c.compression, ":")
			switch {
			case c.format == "squashfs" && got.Compression != nil,
				c.format == "erofs" && alg != "" && strings.Join(got.Compression, ",") != alg:
				t.Fatalf("inspect --json compression = %v", got.Compression)
			}
		})
	}
}
