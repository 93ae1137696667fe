package builder_test

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/sysext/sysext/builder"
	"github.com/sysext/sysext/internal/testenv"
)

// capNetRaw is security.capability for cap_net_raw=ep (vfs_cap_data
// revision 2, little-endian): what `setcap cap_net_raw+ep` writes.
func capNetRaw() []byte {
	b := make([]byte, 20)
	binary.LittleEndian.PutUint32(b[0:], 0x02000000|1) // revision 2, effective
	binary.LittleEndian.PutUint32(b[4:], 1<<13)        // permitted: CAP_NET_RAW
	return b
}

// privilegedTree is a tree whose files could gain privileges when run:
// set-user-ID and set-group-ID programs owned by uid 1000, programs with
// file capabilities, names that need quoting, a hard-link pair, and two
// files the build is told to keep.
func privilegedTree(t *testing.T) (string, map[string]string) {
	t.Helper()
	tree := t.TempDir()
	files := map[string]struct {
		mode os.FileMode
		caps bool
	}{
		"usr/bin/suid":             {0o755 | os.ModeSetuid, false},
		"usr/bin/sgid":             {0o750 | os.ModeSetgid, false},
		"usr/bin/capped":           {0o755, true},
		"usr/bin/both":             {0o755 | os.ModeSetuid, true},
		"usr/lib/we ird \"name\\x": {0o755 | os.ModeSetuid, true},
		"usr/lib/new\nline":        {0o755 | os.ModeSetuid, false},
		"usr/bin/kept-suid":        {0o755 | os.ModeSetuid, false},
		"usr/bin/kept-cap":         {0o755, true},
		"usr/bin/plain":            {0o755, false},
	}
	sums := map[string]string{}
	for p, f := range files {
		full := filepath.Join(tree, p)
		os.MkdirAll(filepath.Dir(full), 0o755)
		body := "#!/bin/sh\necho " + p + "\n"
		if err := os.WriteFile(full, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(full, 1000, 1000); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(full, f.mode); err != nil {
			t.Fatal(err)
		}
		if f.caps {
			if err := unix.Setxattr(full, "security.capability", capNetRaw(), 0); err != nil {
				t.Fatal(err)
			}
		}
		h := sha256.Sum256([]byte(body))
		sums[p] = hex.EncodeToString(h[:])
	}
	if err := os.Link(filepath.Join(tree, "usr/bin/suid"), filepath.Join(tree, "usr/bin/suid-link")); err != nil {
		t.Fatal(err)
	}
	sums["usr/bin/suid-link"] = sums["usr/bin/suid"]
	// A name of a kept file that is not kept itself.
	if err := os.Link(filepath.Join(tree, "usr/bin/kept-suid"), filepath.Join(tree, "usr/bin/kept-suid-other")); err != nil {
		t.Fatal(err)
	}
	sums["usr/bin/kept-suid-other"] = sums["usr/bin/kept-suid"]
	return tree, sums
}

// TestBuildDropsPrivileges: whatever the format and the way the tool
// reads the tree (squashfs pseudo definitions, the EROFS overlay, EROFS
// staging), no file of the image is set-user-ID or set-group-ID or has
// file capabilities unless it was named in KeepPrivileges; content is
// unchanged, the build warns, and the tree is not modified. Issue 19,
// points 2 and 3, checked on the image as the kernel mounts it.
func TestBuildDropsPrivileges(t *testing.T) {
	testenv.RequireRoot(t)
	for _, c := range []struct {
		name    string
		format  builder.ImageFormat
		overlay bool
	}{{"squashfs", builder.Squashfs, true}, {"erofs-overlay", builder.EROFS, true}, {"erofs-staged", builder.EROFS, false}} {
		t.Run(c.name, func(t *testing.T) {
			requireTool(t, c.format)
			defer builder.UseOverlay(c.overlay)()
			tree, sums := privilegedTree(t)
			before := snapshot(t, tree)
			o := opts(tree, testenv.TempDirNoLeak(t, ".#"), c.format)
			o.KeepPrivileges = []string{"/usr/bin/kept-suid", "/usr/bin/kept-cap"}
			res, err := builder.Build(context.Background(), o)
			if err != nil {
				t.Fatal(err)
			}
			if after := snapshot(t, tree); after != before {
				t.Fatalf("the tree changed:\n%s\n---\n%s", before, after)
			}
			if fi, _ := os.Lstat(filepath.Join(tree, "usr/bin/suid")); fi.Mode()&os.ModeSetuid == 0 {
				t.Fatal("the tree lost its set-user-ID bit")
			}
			if _, err := unix.Getxattr(filepath.Join(tree, "usr/bin/capped"), "security.capability", nil); err != nil {
				t.Fatal("the tree lost its capability")
			}
			warned := strings.Join(res.Warnings, "\n")
			if !strings.Contains(warned, "dropped the set-user-ID/set-group-ID bits and file capabilities of 8 files") || !strings.Contains(warned, "/usr/bin/suid,") || !strings.Contains(warned, "--keep-privileges") {
				t.Errorf("warnings: %q", warned)
			}
			files := testenv.ImageFiles(t, res.Path)
			want := map[string]struct{ mode, caps string }{
				"usr/bin/suid":             {"755", ""},
				"usr/bin/suid-link":        {"755", ""},
				"usr/bin/sgid":             {"750", ""},
				"usr/bin/capped":           {"755", ""},
				"usr/bin/both":             {"755", ""},
				"usr/lib/we ird \"name\\x": {"755", ""},
				"usr/lib/new\nline":        {"755", ""},
				"usr/bin/kept-suid":        {"4755", ""},
				"usr/bin/kept-suid-other":  {"755", ""},
				"usr/bin/kept-cap":         {"755", "cap_net_raw=ep"},
				"usr/bin/plain":            {"755", ""},
			}
			for p, w := range want {
				f, ok := files[p]
				if !ok {
					t.Errorf("%q is not in the image", p)
					continue
				}
				if f.Mode != w.mode || f.Caps != w.caps || f.UID != "0" {
					t.Errorf("%q: mode %s caps %q uid %s, want mode %s caps %q uid 0", p, f.Mode, f.Caps, f.UID, w.mode, w.caps)
				}
				if f.Sum != sums[p] {
					t.Errorf("%q: content changed", p)
				}
			}
			for p, f := range files {
				if f.Type == "f" && f.Mode != "755" && f.Mode != "644" && f.Mode != "750" && p != "usr/bin/kept-suid" {
					t.Errorf("%q: mode %s in the image", p, f.Mode)
				}
			}
		})
	}
}

// TestBuildRefusesDeviceNodes: a character or block device in the tree is
// refused with a one-line error naming it, and nothing is written (issue
// 19, point 3: build --from-image put 0666 device nodes in /usr/lib).
func TestBuildRefusesDeviceNodes(t *testing.T) {
	testenv.RequireRoot(t)
	for _, f := range formats {
		t.Run(string(f), func(t *testing.T) {
			requireTool(t, f)
			for _, dev := range []struct {
				name string
				mode uint32
				want string
			}{{"null", unix.S_IFCHR | 0o666, "character device"}, {"loop9", unix.S_IFBLK | 0o666, "block device"}} {
				tree := writeTree(t, t.TempDir())
				p := filepath.Join(tree, "usr/lib", dev.name)
				os.MkdirAll(filepath.Dir(p), 0o755)
				if err := unix.Mknod(p, dev.mode, int(unix.Mkdev(1, 3))); err != nil {
					t.Fatal(err)
				}
				out := testenv.TempDirNoLeak(t, ".#")
				_, err := builder.Build(context.Background(), opts(tree, out, f))
				if err == nil || !strings.Contains(err.Error(), "/usr/lib/"+dev.name+" is a "+dev.want+" node ("+p+")") || strings.Contains(err.Error(), "\n") {
					t.Fatalf("err = %v", err)
				}
				if ents, _ := os.ReadDir(out); len(ents) != 0 {
					t.Fatalf("left %v", ents)
				}
			}
		})
	}
}

// TestKeepPrivilegesNamesAFile: a path to keep that the tree does not have
// as a regular file is a mistake the user hears about.
func TestKeepPrivilegesNamesAFile(t *testing.T) {
	requireTool(t, builder.Squashfs)
	tree := writeTree(t, t.TempDir())
	for _, k := range []string{"/usr/bin/missing", "usr/bin/sysext-test-hello", "/usr/bin/sysext-test-hello-link", "/usr/bin"} {
		o := opts(tree, testenv.TempDirNoLeak(t, ".#"), builder.Squashfs)
		o.KeepPrivileges = []string{k}
		_, err := builder.Build(context.Background(), o)
		if err == nil || !strings.Contains(err.Error(), "--keep-privileges "+k) {
			t.Errorf("keep %s: err = %v", k, err)
		}
	}
}

// TestBuildKeepsOtherNamesOfReplacedFiles: mksquashfs's plain -e excludes
// an inode, so replacing the tree's own release file (or a file that loses
// its capabilities) dropped every other name of that file from the image.
// The exclusions now name paths.
func TestBuildKeepsOtherNamesOfReplacedFiles(t *testing.T) {
	requireTool(t, builder.Squashfs)
	testenv.RequireTool(t, "unsquashfs")
	tree := writeTree(t, t.TempDir())
	rel := filepath.Join(tree, "usr/lib/extension-release.d/extension-release.sysext-test-hello")
	os.MkdirAll(filepath.Dir(rel), 0o755)
	if err := os.WriteFile(rel, []byte("ID=_any\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(rel, filepath.Join(tree, "usr/share/sysext-test-hello/release-copy")); err != nil {
		t.Fatal(err)
	}
	res, err := builder.Build(context.Background(), opts(tree, t.TempDir(), builder.Squashfs))
	if err != nil {
		t.Fatal(err)
	}
	list := run(t, "unsquashfs", "-l", res.Path)
	if !strings.Contains(list, "usr/share/sysext-test-hello/release-copy") {
		t.Fatalf("the other name of the replaced file is gone:\n%s", list)
	}
}
