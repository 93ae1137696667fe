package osrelease

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sysext/sysext/internal/smallfile"
)

func write(t *testing.T, p, s string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

// etc/os-release first, else usr/lib/os-release; an absolute symlink (as
// distributions ship /etc/os-release) is resolved inside the tree, never on
// the host.
func TestReadOrderAndSymlinks(t *testing.T) {
	root := t.TempDir()
	write(t, filepath.Join(root, "usr/lib/os-release"), "ID=lib\n")
	rel, p, err := Read(root)
	if err != nil || rel.Get("ID") != "lib" || p != filepath.Join(root, "usr/lib/os-release") {
		t.Fatalf("usr/lib only: %v %q %v", rel, p, err)
	}
	if err := os.MkdirAll(filepath.Join(root, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/usr/lib/os-release", filepath.Join(root, "etc/os-release")); err != nil {
		t.Fatal(err)
	}
	rel, p, err = Read(root)
	if err != nil || rel.Get("ID") != "lib" || p != filepath.Join(root, "etc/os-release") {
		t.Fatalf("etc symlinked into the tree: %v %q %v", rel, p, err)
	}
	os.Remove(filepath.Join(root, "etc/os-release"))
	write(t, filepath.Join(root, "etc/os-release"), "ID=etc\n")
	if rel, _, err = Read(root); err != nil || rel.Get("ID") != "etc" {
		t.Fatalf("etc first: %v %v", rel, err)
	}
}

func TestReadNotFound(t *testing.T) {
	root := t.TempDir()
	_, _, err := Read(root)
	var nf *NotFoundError
	if !errors.As(err, &nf) || !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), "no os-release in "+root) {
		t.Fatalf("%v", err)
	}
}

// A file that cannot be read is passed over for the other; one that does
// not parse is an error naming it.
func TestReadBadFiles(t *testing.T) {
	root := t.TempDir()
	write(t, filepath.Join(root, "etc/os-release"), strings.Repeat("#", 70<<10))
	write(t, filepath.Join(root, "usr/lib/os-release"), "ID=lib\n")
	if rel, _, err := Read(root); err != nil || rel.Get("ID") != "lib" {
		t.Fatalf("too large etc/os-release not passed over: %v %v", rel, err)
	}
	os.Remove(filepath.Join(root, "usr/lib/os-release"))
	var tl *smallfile.TooLargeError
	if _, _, err := Read(root); !errors.As(err, &tl) || !strings.Contains(err.Error(), "etc/os-release is more than 65536 bytes") {
		t.Fatalf("too large: %v", err)
	}
	write(t, filepath.Join(root, "etc/os-release"), "ID=\"unterminated\n")
	_, p, err := Read(root)
	var pe *ParseError
	if !errors.As(err, &pe) || p != filepath.Join(root, "etc/os-release") || !strings.HasPrefix(err.Error(), p+": line 1") {
		t.Fatalf("parse error: %q %v", p, err)
	}
}

// An endless file (a FIFO or a device in a hostile tree, /dev/zero given
// as --os-release) stops at the bound.
func TestReadFileEndless(t *testing.T) {
	if _, err := os.Stat("/dev/zero"); err != nil {
		t.Skip("no /dev/zero")
	}
	var tl *smallfile.TooLargeError
	if _, err := ReadFile("/dev/zero"); !errors.As(err, &tl) {
		t.Fatalf("/dev/zero: %v", err)
	}
}

func TestReadIn(t *testing.T) {
	root := t.TempDir()
	write(t, filepath.Join(root, "usr/lib/extension-release.d/extension-release.x"), "ID=_any\nSYSEXT_VERSION_ID=1\n")
	rel, err := ReadIn(root, "/usr/lib/extension-release.d/extension-release.x")
	if err != nil || rel.Get("SYSEXT_VERSION_ID") != "1" {
		t.Fatalf("%v %v", rel, err)
	}
	if _, err := ReadIn(root, "usr/lib/extension-release.d/extension-release.y"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("missing: %v", err)
	}
}
