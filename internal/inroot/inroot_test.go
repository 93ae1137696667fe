package inroot

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// tree builds a root with the symlinks an OS tree (or a hostile one) has,
// and a host directory outside it holding a secret.
func tree(t *testing.T) (root, outside string) {
	t.Helper()
	base := t.TempDir()
	root, outside = filepath.Join(base, "root"), filepath.Join(base, "outside")
	for _, d := range []string{root + "/usr/lib", root + "/etc", root + "/elsewhere/lib", root + "/data", outside} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	files := map[string]string{
		root + "/usr/lib/os-release": "ID=inside\n",
		root + "/data/secret":        "inside\n",
		outside + "/secret":          "HOST SECRET\n",
	}
	for p, c := range files {
		if err := os.WriteFile(p, []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	links := map[string]string{
		root + "/var":            "/elsewhere",             // absolute: inside the tree
		root + "/etc/os-release": "../usr/lib/os-release",  // relative
		root + "/climb":          "../../../../../../data", // climbs past the root
		root + "/abs-out":        outside,                  // a host path: taken inside the tree
		root + "/loop-a":         "loop-b",
		root + "/loop-b":         "/loop-a",
		root + "/data/self":      ".",
		root + "/etc/dangling":   "/nowhere/file",
		root + "/data/up":        "../..",
	}
	for l, target := range links {
		if err := os.Symlink(target, l); err != nil {
			t.Fatal(err)
		}
	}
	return root, outside
}

func TestJoinResolvesInsideRoot(t *testing.T) {
	root, outside := tree(t)
	cases := map[string]string{
		"/var/lib/sysext/lock":   "/elsewhere/lib/sysext/lock",
		"/var/lib":               "/elsewhere/lib",
		"/etc/os-release":        "/usr/lib/os-release",
		"/climb/secret":          "/data/secret",
		"/../../../data/secret":  "/data/secret",
		"/abs-out/secret":        outside + "/secret",
		"/data/self/self/secret": "/data/secret",
		"/data/up/data/up/etc":   "/etc",
		"/etc/dangling":          "/nowhere/file",
		"etc/os-release":         "/usr/lib/os-release",
		"/new/dir/file":          "/new/dir/file",
		"/usr/lib/os-release/x":  "/usr/lib/os-release/x", // fails at the kernel with ENOTDIR
		"/":                      "",
	}
	for p, want := range cases {
		got, err := Join(root, p)
		if err != nil {
			t.Errorf("Join(%q): %v", p, err)
			continue
		}
		if got != filepath.Join(root, want) {
			t.Errorf("Join(%q) = %s, want %s", p, got, filepath.Join(root, want))
		}
		if !strings.HasPrefix(got+"/", root+"/") {
			t.Errorf("Join(%q) = %s is outside the root", p, got)
		}
	}
	if got, err := JoinParent(root, "/var/lib/extensions/x.raw"); err != nil || got != root+"/elsewhere/lib/extensions/x.raw" {
		t.Errorf("JoinParent = %s, %v", got, err)
	}
	if got, err := JoinParent(root, "/etc/os-release"); err != nil || got != root+"/etc/os-release" {
		t.Errorf("JoinParent keeps the last symlink: %s, %v", got, err)
	}
	if _, err := Join(root, "/loop-a/x"); !errors.Is(err, syscall.ELOOP) {
		t.Errorf("Join through a loop: %v, want ELOOP", err)
	}
	if _, err := Join(root, "/missing/../../etc"); err == nil {
		t.Errorf("Join with .. after a missing directory succeeded")
	}
	// The running system: paths as they are.
	if got, _ := Join("/", "/var/lib/x"); got != "/var/lib/x" {
		t.Errorf("Join(/) = %s", got)
	}
}

// TestOpenBothWays checks openat2 (when the kernel has it) and the
// component walk against each other on the same tree.
func TestOpenBothWays(t *testing.T) {
	root, _ := tree(t)
	modes := []bool{true}
	if haveOpenat2() {
		modes = append(modes, false)
	} else {
		t.Log("kernel without openat2: only the component walk is tested")
	}
	for _, walk := range modes {
		forceWalk = walk
		read := func(p string) (string, error) {
			b, err := ReadFile(root, p, 1<<10)
			return string(b), err
		}
		for p, want := range map[string]string{
			"/etc/os-release":      "ID=inside\n",
			"/climb/secret":        "inside\n",
			"/../data/secret":      "inside\n",
			"/data/up/data/secret": "inside\n",
		} {
			if got, err := read(p); err != nil || got != want {
				t.Errorf("walk=%v: ReadFile(%q) = %q, %v; want %q", walk, p, got, err, want)
			}
		}
		if got, err := read("/abs-out/secret"); err == nil || strings.Contains(got, "HOST") {
			t.Errorf("walk=%v: an absolute symlink to a host path read %q (%v): it must resolve inside the root", walk, got, err)
		}
		if _, err := read("/loop-a"); !errors.Is(err, syscall.ELOOP) {
			t.Errorf("walk=%v: loop: %v", walk, err)
		}
		if _, err := ReadFile(root, "/data/secret", 3); err == nil {
			t.Errorf("walk=%v: the size limit was not applied", walk)
		}
		ents, err := ReadDir(root, "/var/..//data/up/data")
		if err != nil || len(ents) != 3 {
			t.Errorf("walk=%v: ReadDir = %d entries, %v", walk, len(ents), err)
		}
	}
	forceWalk = false
}
