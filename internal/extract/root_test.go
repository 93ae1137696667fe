package extract

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// A resolution error names the path asked for once, and says what went
// wrong as a type (ENOTDIR, ErrEscape), not only in words.
func TestResolveErrorsNameThePathOnce(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "usr/lib"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "usr/file"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("../../..", filepath.Join(dir, "usr/lib/up")); err != nil {
		t.Fatal(err)
	}
	r, err := OpenRoot(dir, true)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	for _, c := range []struct {
		rel  string
		is   error
		want string
	}{
		{"usr/file", syscall.ENOTDIR, "usr/file is not a directory"},
		{"usr/file/x", syscall.ENOTDIR, "usr/file/x: usr/file is not a directory"},
		{"usr/lib/up/etc", ErrEscape, "usr/lib/up/etc: a symlink leads above the root"},
		{"usr/none", syscall.ENOENT, "lstat usr/none: "},
	} {
		_, err := r.ResolveDir(c.rel)
		if !errors.Is(err, c.is) || !strings.HasPrefix(err.Error(), c.want) {
			t.Errorf("ResolveDir(%s) = %v, want %v starting %q", c.rel, err, c.is, c.want)
		}
		if err != nil && strings.Count(err.Error(), c.rel) != 1 {
			t.Errorf("ResolveDir(%s) = %v: names it %d times", c.rel, err, strings.Count(err.Error(), c.rel))
		}
	}
}
