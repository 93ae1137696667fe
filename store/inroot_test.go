package store

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestRootSymlinksStayInside: an OS tree whose /var (and /etc/extensions)
// are absolute symlinks, as a hostile or simply unusual tree has. Every
// file the store writes must land inside the root, where the link's target
// is taken inside the root as the booted system would see it.
func TestRootSymlinksStayInside(t *testing.T) {
	base := t.TempDir()
	root, elsewhere := filepath.Join(base, "root"), filepath.Join(base, "elsewhere")
	for _, d := range []string{root, elsewhere, filepath.Join(root, "etc")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// Both an absolute link naming a host directory and one naming a
	// directory of the tree.
	if err := os.Symlink(elsewhere, filepath.Join(root, "var")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/var/lib/extensions", filepath.Join(root, "etc/extensions")); err != nil {
		t.Fatal(err)
	}
	s := open(t, Options{Root: root})
	put(t, s, "x", "1", "one")
	put(t, s, "x", "2", "two")
	if got := activeContent(t, s, "x"); got != "two" {
		t.Errorf("active content %q", got)
	}
	if _, err := s.Rollback("x"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GC(1); err != nil {
		t.Fatal(err)
	}
	s.Close()
	var outside []string
	filepath.Walk(elsewhere, func(p string, fi os.FileInfo, err error) error {
		if err == nil && p != elsewhere {
			outside = append(outside, strings.TrimPrefix(p, base))
		}
		return nil
	})
	if len(outside) > 0 {
		t.Fatalf("the store wrote outside --root through ROOT/var -> %s: %v", elsewhere, outside)
	}
	// Inside the root, /var is root+elsewhere.
	in := filepath.Join(root, elsewhere)
	for _, p := range []string{"lib/sysext/state.json", "lib/sysext/lock", "lib/extensions/x.raw", "lib/sysext/store/x"} {
		if _, err := os.Lstat(filepath.Join(in, p)); err != nil {
			t.Errorf("%s: %v", p, err)
		}
	}
}
