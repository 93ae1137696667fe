package fsimage_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/sysext/sysext/fsimage"
	"github.com/sysext/sysext/internal/testenv"
	"github.com/sysext/sysext/internal/testhook"
)

// hangImage is issue 19's crafted squashfs: go-diskfs spun on it for
// minutes, reading one empty metadata block after another past the end.
const hangImage = "testdata/squashfs-hang.raw"

// TestHangImageRefused: every way of reading the crafted image returns a
// one-line corrupt-image error naming the file.
func TestHangImageRefused(t *testing.T) {
	ctx := context.Background()
	reads := map[string]func() error{
		"Open":         func() error { _, err := fsimage.Open(ctx, hangImage); return err },
		"OpenMetadata": func() error { _, err := fsimage.OpenMetadata(ctx, hangImage); return err },
		"SpecialFiles": func() error {
			_, err := fsimage.OpenWith(ctx, hangImage, fsimage.Options{SpecialFiles: true})
			return err
		},
		"ReadFile": func() error {
			_, err := fsimage.ReadFile(ctx, hangImage, "usr/lib/extension-release.d/extension-release.hello", 1000)
			return err
		},
	}
	for name, read := range reads {
		err := read()
		if !errors.Is(err, fsimage.ErrCorrupt) || !strings.Contains(err.Error(), "corrupt squashfs image") ||
			!strings.Contains(err.Error(), hangImage) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: %v; want a one-line corrupt squashfs image error naming the file", name, err)
		}
	}
}

// TestReadStopsWhenCancelled: a read in progress when the command is
// interrupted (the context is cancelled) returns context.Canceled at the
// reader's next step instead of finishing, for every Go reader.
func TestReadStopsWhenCancelled(t *testing.T) {
	tree := writeTree(t, "hello", release)
	images := map[string]string{
		"squashfs": mksquashfs(t, tree, "-comp", "zstd"),
		"erofs":    mkfsErofs(t, tree),
	}
	for name, img := range images {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			reading := make(chan struct{})
			first := true
			// The slow disk: the first read returns only once the
			// command has been interrupted.
			testhook.ImageRead = func(ctx context.Context) {
				if first {
					first = false
					close(reading)
					<-ctx.Done()
				}
			}
			defer func() { testhook.ImageRead = nil }()
			go func() { <-reading; cancel() }()
			_, err := fsimage.OpenWith(ctx, img, fsimage.Options{SpecialFiles: true})
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("OpenWith after cancel = %v; want context.Canceled", err)
			}
		})
	}
}

// specialTree makes a tree with a setuid root file, a setgid file, a file
// with capabilities (set by setcap when installed, else as the raw
// xattr) and a character and a block device; it returns the tree and the
// capabilities getcap prints for the file ("" without getcap).
func specialTree(t *testing.T) (string, string) {
	testenv.RequireRoot(t)
	dir := writeTree(t, "special", release)
	p := func(s string) string { return filepath.Join(dir, s) }
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.WriteFile(p("usr/bin/su"), []byte("su"), 0o644))
	must(os.Chmod(p("usr/bin/su"), 0o755|os.ModeSetuid))
	must(os.WriteFile(p("usr/bin/wall"), []byte("wall"), 0o644))
	must(os.Chown(p("usr/bin/wall"), 0, 5))
	must(os.Chmod(p("usr/bin/wall"), 0o755|os.ModeSetgid))
	must(os.WriteFile(p("usr/bin/ping"), []byte("ping"), 0o755))
	caps := ""
	if _, err := exec.LookPath("setcap"); err == nil {
		if out, err := exec.Command("setcap", "cap_net_raw,cap_sys_admin=ep", p("usr/bin/ping")).CombinedOutput(); err != nil {
			t.Fatalf("setcap: %v %s", err, out)
		}
		out, err := exec.Command("getcap", p("usr/bin/ping")).Output()
		if err != nil {
			t.Fatal(err)
		}
		_, caps, _ = strings.Cut(strings.TrimSpace(string(out)), " ")
	} else {
		// vfs_cap_data revision 2, effective: cap_net_raw (13), cap_sys_admin (21).
		v := make([]byte, 20)
		binary.LittleEndian.PutUint32(v, 0x02000001)
		binary.LittleEndian.PutUint32(v[4:], 1<<13|1<<21)
		must(unix.Setxattr(p("usr/bin/ping"), "security.capability", v, 0))
	}
	must(os.MkdirAll(p("usr/lib/dev"), 0o755))
	for _, d := range []struct {
		name  string
		typ   uint32
		perm  os.FileMode
		major uint32
		minor uint32
	}{
		{"null", unix.S_IFCHR, 0o666, 1, 3},
		{"sda", unix.S_IFBLK, 0o660, 8, 0},
		// A minor above 255 exercises the split encoding of device numbers.
		{"big", unix.S_IFCHR, 0o600, 240, 300},
	} {
		must(unix.Mknod(p("usr/lib/dev/"+d.name), d.typ|uint32(d.perm), int(unix.Mkdev(d.major, d.minor))))
		must(os.Chmod(p("usr/lib/dev/"+d.name), d.perm)) // past the umask
	}
	// A setgid directory is ordinary (shared group ownership): not listed.
	must(os.MkdirAll(p("usr/share/shared"), 0o755))
	must(os.Chmod(p("usr/share/shared"), 0o775|os.ModeSetgid))
	return dir, caps
}

// TestSpecialFiles reads the setuid/setgid files, capabilities and device
// nodes of images the real tools made, in every reader, without mounting.
func TestSpecialFiles(t *testing.T) {
	tree, getcap := specialTree(t)
	const caps = "cap_net_raw,cap_sys_admin=ep"
	if getcap != "" && getcap != caps {
		t.Fatalf("getcap says %q, the test expects %q", getcap, caps)
	}
	want := []fsimage.SpecialFile{
		{Path: "usr/bin/ping", Mode: 0o755, Capabilities: caps},
		{Path: "usr/bin/su", Mode: 0o755 | os.ModeSetuid},
		{Path: "usr/bin/wall", Mode: 0o755 | os.ModeSetgid, GID: 5},
		{Path: "usr/lib/dev/big", Mode: 0o600 | os.ModeDevice | os.ModeCharDevice, Major: 240, Minor: 300},
		{Path: "usr/lib/dev/null", Mode: 0o666 | os.ModeDevice | os.ModeCharDevice, Major: 1, Minor: 3},
		{Path: "usr/lib/dev/sda", Mode: 0o660 | os.ModeDevice, Major: 8},
	}
	images := map[string]string{
		"squashfs zstd":      mksquashfs(t, tree, "-comp", "zstd"),
		"squashfs gzip":      mksquashfs(t, tree, "-comp", "gzip"),
		"squashfs xz":        mksquashfs(t, tree, "-comp", "xz"),
		"squashfs lz4":       mksquashfs(t, tree, "-comp", "lz4"),
		"squashfs lzo":       mksquashfs(t, tree, "-comp", "lzo"),
		"squashfs lzma":      mksquashfs(t, tree, "-comp", "lzma"),
		"squashfs plain":     mksquashfs(t, tree, "-noI", "-noD", "-noF", "-noX"),
		"squashfs xz bcj":    mksquashfs(t, tree, "-comp", "xz", "-Xbcj", "x86"),
		"erofs plain":        mkfsErofs(t, tree),
		"erofs lz4hc bakery": mkfsErofs(t, tree, "-zlz4hc,12", "-C65536", "-Efragments,ztailpacking"),
	}
	for name, img := range images {
		t.Run(name, func(t *testing.T) {
			info, err := fsimage.OpenWith(context.Background(), img, fsimage.Options{SpecialFiles: true})
			if err != nil {
				t.Fatal(err)
			}
			want := want
			// unsquashfs (xz with a BCJ filter) lists no xattrs, and says so.
			if name == "squashfs xz bcj" {
				if !info.CapabilitiesUnread {
					t.Errorf("capabilities read by unsquashfs?")
				}
				want = append([]fsimage.SpecialFile(nil), want[1:]...)
			} else if info.CapabilitiesUnread {
				t.Errorf("capabilities not read")
			}
			if !reflect.DeepEqual(info.SpecialFiles, want) {
				t.Errorf("special files:\n got %+v\nwant %+v", info.SpecialFiles, want)
			}
		})
	}
	// Without the option, nothing is walked.
	info, err := fsimage.Open(context.Background(), images["squashfs zstd"])
	if err != nil || info.SpecialFiles != nil {
		t.Fatalf("Open = %+v, %v", info, err)
	}
}

func TestFormatCapabilities(t *testing.T) {
	v2 := func(magic, perm0, inh0, perm1 uint32) []byte {
		b := make([]byte, 20)
		binary.LittleEndian.PutUint32(b, magic)
		binary.LittleEndian.PutUint32(b[4:], perm0)
		binary.LittleEndian.PutUint32(b[8:], inh0)
		binary.LittleEndian.PutUint32(b[12:], perm1)
		return b
	}
	v3 := append(v2(0x03000001, 1<<7, 0, 0), 0xE8, 0x03, 0, 0)
	tests := []struct {
		in   []byte
		want string
	}{
		{v2(0x02000001, 1<<7|1<<21, 0, 0), "cap_setuid,cap_sys_admin=ep"},
		{v2(0x02000000, 1<<13, 0, 0), "cap_net_raw=p"},
		{v2(0x02000001, 1<<13, 1<<12, 0), "cap_net_admin=i cap_net_raw=ep"},
		{v2(0x02000001, 0, 0, 1<<(40-32)), "cap_checkpoint_restore=ep"},
		{v2(0x02000001, 0, 0, 1<<(50-32)), "cap_50=ep"},
		{v2(0x02000000, 0, 0, 0), "="},
		{v3, "cap_setuid=ep [rootid=1000]"},
		{[]byte{1, 2}, "unparsed (2 bytes)"},
		{v2(0x05000000, 0, 0, 0), "unparsed (revision 0x5000000)"},
		{v2(0x02000001, 1, 0, 0)[:16], "unparsed (16 bytes)"},
	}
	for _, tt := range tests {
		if got := fsimage.FormatCapabilities(tt.in); got != tt.want {
			t.Errorf("FormatCapabilities(%x) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// TestDirectoryLoopRefused: a crafted directory entry pointing back at the
// root makes the walk an error, not an endless loop, in both formats.
func TestDirectoryLoopRefused(t *testing.T) {
	tree := writeTree(t, "loop", release)
	if err := os.MkdirAll(filepath.Join(tree, "usr/zzloop"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Run("squashfs", func(t *testing.T) {
		// Uncompressed tables, so the entry can be edited in place.
		data, err := os.ReadFile(mksquashfs(t, tree, "-noI", "-noD", "-noF", "-noX", "-no-xattrs"))
		if err != nil {
			t.Fatal(err)
		}
		root := binary.LittleEndian.Uint64(data[32:])
		dirTable := binary.LittleEndian.Uint64(data[72:])
		// Entry: offset u16, inode delta s16, type u16, name size-1 u16, name.
		i := bytes.Index(data[dirTable:], []byte("zzloop"))
		if i < 8 || root>>16 != 0 {
			t.Fatalf("entry not found (%d) or root not in the first block (%#x)", i, root)
		}
		e := int(dirTable) + i - 8
		binary.LittleEndian.PutUint16(data[e:], uint16(root&0xFFFF))
		img := writeFile(t, data)
		_, err = fsimage.OpenWith(context.Background(), img, fsimage.Options{SpecialFiles: true})
		if !errors.Is(err, fsimage.ErrCorrupt) || !strings.Contains(err.Error(), "entered twice") {
			t.Fatalf("OpenWith = %v; want a directory loop error", err)
		}
	})
	t.Run("erofs", func(t *testing.T) {
		data, err := os.ReadFile(mkfsErofs(t, tree))
		if err != nil {
			t.Fatal(err)
		}
		rootNid := binary.LittleEndian.Uint16(data[1024+14:])
		// A directory's data (in a block, or inline after its inode) is
		// dirents (nid u64, nameoff u16, type u8, reserved u8) then the
		// names, "." first; nameoff counts from the dirents' start.
		i := bytes.Index(data, []byte("zzloop"))
		found := false
		for b := i - 12; b >= 0 && b > i-4096 && !found; b-- {
			first := int(binary.LittleEndian.Uint16(data[b+8:]))
			if first == 0 || first%12 != 0 || b+first > i || data[b+first] != '.' {
				continue
			}
			for d := b; d < b+first; d += 12 {
				if b+int(binary.LittleEndian.Uint16(data[d+8:])) == i {
					binary.LittleEndian.PutUint64(data[d:], uint64(rootNid))
					found = true
				}
			}
		}
		if !found {
			t.Fatalf("dirent for zzloop not found")
		}
		img := writeFile(t, data)
		_, err = fsimage.OpenWith(context.Background(), img, fsimage.Options{SpecialFiles: true})
		if !errors.Is(err, fsimage.ErrCorrupt) || !strings.Contains(err.Error(), "entered twice") {
			t.Fatalf("OpenWith = %v; want a directory loop error", err)
		}
	})
}

// TestDigestCacheForged: whoever can write a file can set its
// user.sysext.sha256 attribute; such a cache is never believed.
func TestDigestCacheForged(t *testing.T) {
	img := mksquashfs(t, writeTree(t, "hello", release))
	real := fileDigest(t, img)
	info, err := fsimage.Open(context.Background(), img)
	if err != nil || info.Digest != real || info.DigestCached {
		t.Fatalf("first Open = %+v, %v", info, err)
	}
	buf := make([]byte, 256)
	n, err := unix.Getxattr(img, fsimage.DigestXattr, buf)
	if err != nil {
		t.Skipf("this filesystem keeps no user xattrs (%v): the cache is best effort", err)
	}
	key, _, _ := strings.Cut(string(buf[:n]), " ")
	forge := func() {
		t.Helper()
		fake := "sha256:" + strings.Repeat("0", 64)
		if err := unix.Setxattr(img, fsimage.DigestXattr, []byte(key+" "+fake), 0); err != nil {
			t.Fatal(err)
		}
	}
	// Our own file, writable by us only: the cache is ours, and labelled.
	forge()
	if info, _ := fsimage.Open(context.Background(), img); !info.DigestCached || info.Digest == real {
		t.Fatalf("own cache not used: %+v", info)
	}
	// Writable by others: anyone may have set it.
	forge()
	if err := os.Chmod(img, 0o666); err != nil {
		t.Fatal(err)
	}
	key = keyOf(t, img) // chmod keeps size, mtime and inode
	forge()
	if info, _ := fsimage.Open(context.Background(), img); info.Digest != real || info.DigestCached {
		t.Fatalf("cache of a world-writable file believed: %+v", info)
	}
	if err := os.Chmod(img, 0o644); err != nil {
		t.Fatal(err)
	}
	// Owned by another user (who can write it): not believed either.
	if os.Geteuid() == 0 {
		if err := os.Chown(img, 1000, 1000); err != nil {
			t.Fatal(err)
		}
		forge()
		if info, _ := fsimage.Open(context.Background(), img); info.Digest != real || info.DigestCached {
			t.Fatalf("cache of another user's file believed: %+v", info)
		}
	}
}

func keyOf(t *testing.T, p string) string {
	buf := make([]byte, 256)
	n, err := unix.Getxattr(p, fsimage.DigestXattr, buf)
	if err != nil {
		t.Fatal(err)
	}
	k, _, _ := strings.Cut(string(buf[:n]), " ")
	return k
}

// BenchmarkHostileImage: refusing issue 19's crafted image costs what
// reading a valid image of the same size does, next to the floor of
// opening and reading those bytes at all. Reports ms per read.
// Run with: go test -run '^$' -bench HostileImage ./fsimage
func BenchmarkHostileImage(b *testing.B) {
	valid := mksquashfs(b, writeTree(b, "hello", release), "-comp", "zstd")
	ctx := context.Background()
	b.Run("floor-open-read", func(b *testing.B) {
		buf := make([]byte, 4096)
		for b.Loop() {
			f, err := os.Open(hangImage)
			if err != nil {
				b.Fatal(err)
			}
			f.ReadAt(buf, 0)
			f.Close()
		}
	})
	b.Run("refuse-hang-image", func(b *testing.B) {
		for b.Loop() {
			if _, err := fsimage.OpenMetadata(ctx, hangImage); !errors.Is(err, fsimage.ErrCorrupt) {
				b.Fatal(err)
			}
		}
	})
	b.Run("read-valid-image", func(b *testing.B) {
		for b.Loop() {
			if _, err := fsimage.OpenMetadata(ctx, valid); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("walk-valid-image", func(b *testing.B) {
		for b.Loop() {
			if _, err := fsimage.OpenWith(ctx, valid, fsimage.Options{SpecialFiles: true}); err != nil {
				b.Fatal(err)
			}
		}
	})
}
