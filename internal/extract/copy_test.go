package extract

import (
	"context"
	"os"
	"path/filepath"
	"sort"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// copySource makes a tree with a hard-link pair, a private directory, a
// sticky file, a symlink, a fifo, extended attributes, a set-user-ID file
// and a file with capabilities (the last two only as root), under parent.
func copySource(t *testing.T, parent string) string {
	t.Helper()
	src, err := os.MkdirTemp(parent, "copy-src-")
	if err != nil {
		t.Skipf("no room in %s: %v", parent, err)
	}
	t.Cleanup(func() { os.RemoveAll(src) })
	w := func(p string, mode os.FileMode) string {
		full := filepath.Join(src, p)
		os.MkdirAll(filepath.Dir(full), 0o755)
		if err := os.WriteFile(full, []byte("content of "+p), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(full, mode); err != nil {
			t.Fatal(err)
		}
		return full
	}
	a := w("usr/bin/a", 0o755)
	os.Link(a, filepath.Join(src, "usr/bin/a-link"))
	w("usr/share/sticky", 0o644|os.ModeSticky)
	os.Symlink("a", filepath.Join(src, "usr/bin/sym"))
	unix.Mkfifo(filepath.Join(src, "usr/fifo"), 0o600)
	x := w("usr/share/x", 0o644)
	if err := unix.Setxattr(x, "user.test", []byte("v"), 0); err != nil {
		t.Skipf("no user xattrs on %s: %v", parent, err)
	}
	os.MkdirAll(filepath.Join(src, "proc/self"), 0o755)
	w("proc/self/status", 0o644)
	os.MkdirAll(filepath.Join(src, "usr/private"), 0o700)
	if os.Geteuid() == 0 {
		su := w("usr/bin/su", 0o755|os.ModeSetuid)
		os.Chown(su, 1000, 1000)
		os.Chmod(su, 0o755|os.ModeSetuid)
		os.Link(su, filepath.Join(src, "usr/bin/su-link"))
		c := w("usr/bin/ping", 0o755)
		caps := []byte{1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
		if err := unix.Setxattr(c, CapabilityXattr, caps, 0); err != nil {
			t.Fatal(err)
		}
		unix.Mknod(filepath.Join(src, "usr/null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3)))
		os.Chown(filepath.Join(src, "usr/share/x"), 1234, 1234)
	}
	os.Chmod(src, 0o700)
	return src
}

func ino(t *testing.T, p string) uint64 {
	t.Helper()
	fi, err := os.Lstat(p)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t).Ino
}

// TestCopyTree: the one tree copier (builder staging, flatwrap) keeps hard
// links, modes and extended attributes whether it links or copies, drops
// privileges where asked except on the files kept, prunes and skips as
// told, and leaves the source as it was.
func TestCopyTree(t *testing.T) {
	for _, c := range []struct {
		name   string
		parent string // where the source lives: another filesystem forces copies
		link   bool
	}{{"link", "", true}, {"copy", "", false}, {"across-filesystems", "/dev/shm", true}} {
		t.Run(c.name, func(t *testing.T) {
			dst := t.TempDir()
			parent := c.parent
			if parent == "" {
				parent = t.TempDir()
			}
			src := copySource(t, parent)
			res, err := CopyTree(context.Background(), src, dst, CopyOptions{
				Link:        c.link,
				Privileges:  DropUnless([]string{"/usr/bin/su-link"}),
				Prune:       func(rel string) bool { return rel == "/proc" },
				SkipSpecial: true,
			})
			if err != nil {
				t.Fatal(err)
			}
			if fi, _ := os.Stat(dst); fi.Mode().Perm() != 0o755 {
				t.Errorf("root %v", fi.Mode())
			}
			if ino(t, filepath.Join(dst, "usr/bin/a")) != ino(t, filepath.Join(dst, "usr/bin/a-link")) {
				t.Error("the hard link pair became two files")
			}
			linked := ino(t, filepath.Join(dst, "usr/bin/a")) == ino(t, filepath.Join(src, "usr/bin/a"))
			if want := c.link && c.parent == ""; linked != want {
				t.Errorf("linked to the source: %v, want %v (copied %d)", linked, want, res.Copied)
			}
			for p, m := range map[string]os.FileMode{"usr/share/sticky": 0o644 | os.ModeSticky, "usr/bin/a": 0o755, "usr/private": os.ModeDir | 0o700} {
				if fi, err := os.Lstat(filepath.Join(dst, p)); err != nil || fi.Mode() != m {
					t.Errorf("%s: %v %v, want %v", p, fi.Mode(), err, m)
				}
			}
			if l, _ := os.Readlink(filepath.Join(dst, "usr/bin/sym")); l != "a" {
				t.Errorf("symlink %q", l)
			}
			if fi, err := os.Lstat(filepath.Join(dst, "usr/fifo")); err != nil || fi.Mode()&os.ModeNamedPipe == 0 {
				t.Errorf("fifo: %v", err)
			}
			v := make([]byte, 8)
			if n, err := unix.Getxattr(filepath.Join(dst, "usr/share/x"), "user.test", v); err != nil || string(v[:n]) != "v" {
				t.Errorf("xattr: %q %v", v[:n], err)
			}
			if _, err := os.Lstat(filepath.Join(dst, "proc/self")); err == nil {
				t.Error("a pruned directory's content was copied")
			}
			if fi, err := os.Lstat(filepath.Join(dst, "proc")); err != nil || !fi.IsDir() {
				t.Errorf("the pruned directory itself: %v", err)
			}
			if os.Geteuid() != 0 {
				return
			}
			if fi, _ := os.Lstat(filepath.Join(dst, "usr/share/x")); fi.Sys().(*syscall.Stat_t).Uid != 1234 {
				t.Error("owner not kept")
			}
			if _, err := os.Lstat(filepath.Join(dst, "usr/null")); err == nil {
				t.Error("a device node was copied with SkipSpecial")
			}
			if fi, _ := os.Lstat(filepath.Join(dst, "usr/bin/su")); fi.Mode() != 0o755 {
				t.Errorf("su: %v", fi.Mode())
			}
			if fi, _ := os.Lstat(filepath.Join(dst, "usr/bin/su-link")); fi.Mode() != 0o755|os.ModeSetuid {
				t.Errorf("kept su-link: %v", fi.Mode())
			}
			if has, _ := HasCapabilities(filepath.Join(dst, "usr/bin/ping")); has {
				t.Error("ping kept its capabilities")
			}
			sort.Strings(res.Dropped)
			if len(res.Dropped) != 2 || res.Dropped[0] != "/usr/bin/ping" || res.Dropped[1] != "/usr/bin/su" {
				t.Errorf("dropped %v", res.Dropped)
			}
			if fi, _ := os.Lstat(filepath.Join(src, "usr/bin/su")); fi.Mode()&os.ModeSetuid == 0 {
				t.Error("the source lost its set-user-ID bit")
			}
			if has, _ := HasCapabilities(filepath.Join(src, "usr/bin/ping")); !has {
				t.Error("the source lost its capabilities")
			}
		})
	}
}
