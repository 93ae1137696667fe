package extract

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sysext/sysext/internal/tartest"
)

// ent is one tar entry of a test archive.
type ent = tartest.Entry

var (
	file     = tartest.File
	dirEnt   = tartest.Dir
	symlink  = tartest.Symlink
	hardlink = tartest.Hardlink
)

func apply(t testing.TB, dir string, opts Options, layers ...[]byte) (*Applier, error) {
	t.Helper()
	a, err := NewApplier(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	for _, l := range layers {
		if err := a.Apply(context.Background(), bytes.NewReader(l)); err != nil {
			return a, err
		}
	}
	return a, a.Finish()
}

// TestSparseEntryStaysSparse: a 3.5 KiB tar holding a 200 MiB sparse file
// takes no more room on disk than its data.
func TestSparseEntryStaysSparse(t *testing.T) {
	dir := t.TempDir()
	const size = 200 << 20
	if _, err := apply(t, dir, Options{}, tartest.Sparse("big", size)); err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Stat(filepath.Join(dir, "big"), &st); err != nil {
		t.Fatal(err)
	}
	if st.Size != size {
		t.Fatalf("size %d, want %d", st.Size, size)
	}
	if allocated := st.Blocks * 512; allocated > 1<<20 {
		t.Fatalf("%d bytes allocated on disk for a file with one byte of data", allocated)
	}
	f, _ := os.Open(filepath.Join(dir, "big"))
	defer f.Close()
	last := make([]byte, 1)
	if _, err := f.ReadAt(last, size-1); err != nil || last[0] != 'x' {
		t.Fatalf("last byte %q, %v", last, err)
	}
}

// TestZerosBecomeHoles: a dense entry whose content is mostly zeros is
// written with holes, and reads back the same.
func TestZerosBecomeHoles(t *testing.T) {
	dir := t.TempDir()
	body := make([]byte, 3<<20)
	copy(body[1<<20:], "data in the middle")
	body[len(body)-1] = 'z'
	if _, err := apply(t, dir, Options{}, tartest.Tar(t, file("f", string(body)))); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(dir, "f"))
	if err != nil || !bytes.Equal(got, body) {
		t.Fatalf("content differs (%v)", err)
	}
	var st unix.Stat_t
	unix.Stat(filepath.Join(dir, "f"), &st)
	if st.Blocks*512 > 1<<20 {
		t.Fatalf("%d bytes allocated for 3 MiB of mostly zeros", st.Blocks*512)
	}
}

// TestBudgetRefusesOversizeEntry: an entry larger than the budget is
// refused before it is written, with a one-line error naming the limit.
func TestBudgetRefusesOversizeEntry(t *testing.T) {
	dir := t.TempDir()
	b, err := NewBudget(100<<20, dir)
	if err != nil {
		t.Fatal(err)
	}
	_, err = apply(t, dir, Options{Budget: b}, tartest.Tar(t, file("small", "x")), tartest.Sparse("big", 200<<20))
	if !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), "--max-size 100.0 MiB") || strings.Contains(err.Error(), "\n") {
		t.Fatalf("err = %v", err)
	}
	if errors.Is(err, syscall.ENOSPC) {
		t.Error("a limit the user chose is not a full disk: the caller must not retry elsewhere")
	}
	if _, err := os.Lstat(filepath.Join(dir, "big")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the refused file was created: %v", err)
	}
	// Shared: what fits is taken from what is left.
	if err := b.Take(100<<20 - 1); err != nil {
		t.Fatalf("the rest of the budget: %v", err)
	}
	if err := b.Take(1); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("over the budget: %v", err)
	}
}

// TestBudgetFromFreeSpace: without a limit the budget is a share of the
// free space, and exceeding it reads as a full disk (the caller may retry
// where there is more room).
func TestBudgetFromFreeSpace(t *testing.T) {
	dir := t.TempDir()
	b, err := NewBudget(0, dir)
	if err != nil {
		t.Fatal(err)
	}
	var st unix.Statfs_t
	unix.Statfs(dir, &st)
	free := int64(st.Bavail) * int64(st.Bsize)
	if b.Limit() <= 0 || b.Limit() > free {
		t.Fatalf("limit %d with %d free", b.Limit(), free)
	}
	err = b.Take(free + 1)
	if !errors.Is(err, syscall.ENOSPC) || !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), dir) {
		t.Fatalf("err = %v", err)
	}
}

// TestHardLinkThroughSymlinkLeavingRoot: a symlink to a directory outside
// and a hard link through it cannot link an outside file into the tree.
func TestHardLinkThroughSymlinkLeavingRoot(t *testing.T) {
	sandbox := t.TempDir()
	secret := filepath.Join(sandbox, "etc", "shadow")
	os.MkdirAll(filepath.Dir(secret), 0o755)
	os.WriteFile(secret, []byte("root:secret"), 0o600)
	for _, target := range []string{filepath.Join(sandbox, "etc"), "../../../../../../../../" + filepath.Join(sandbox, "etc")} {
		dir := filepath.Join(sandbox, "root")
		os.RemoveAll(dir)
		os.Mkdir(dir, 0o755)
		_, err := apply(t, dir, Options{}, tartest.Tar(t, dirEnt("pkg"), symlink("pkg/evil", target), hardlink("pkg/leak", "pkg/evil/shadow")))
		if err == nil {
			t.Fatalf("target %s: the hard link through the symlink was accepted", target)
		}
		var st unix.Stat_t
		if unix.Stat(secret, &st); st.Nlink != 1 {
			t.Fatalf("target %s: the outside file has %d links", target, st.Nlink)
		}
		if _, err := os.Lstat(filepath.Join(dir, "pkg/leak")); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("target %s: pkg/leak exists (%v)", target, err)
		}
	}
}

// TestRootEntryChangesNothing: a "./" entry cannot change the mode or
// owner of the directory extracted into.
func TestRootEntryChangesNothing(t *testing.T) {
	dir := t.TempDir()
	os.Chmod(dir, 0o755)
	root := ent{Name: "./", Type: tar.TypeDir, Mode: 0o7777, UID: 1234}
	if _, err := apply(t, dir, Options{}, tartest.Tar(t, root, file("f", "x"))); err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(dir)
	if fi.Mode() != os.ModeDir|0o755 {
		t.Fatalf("the root became %v", fi.Mode())
	}
}

func TestDevicesSkippedUnlessRoot(t *testing.T) {
	defer func(v bool) { IsRoot = v }(IsRoot)
	IsRoot = false
	dir := t.TempDir()
	dev := ent{Name: "null", Type: tar.TypeChar, Mode: 0o666}
	a, err := apply(t, dir, Options{}, tartest.Tar(t, dev, file("f", "x")))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(filepath.Join(dir, "null")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("device node created without root: %v", err)
	}
	if a.Stats().SkippedDevices != 1 {
		t.Fatalf("stats %+v", a.Stats())
	}
}

func TestOwnershipAndXattrsAsRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to set ownership")
	}
	dir := t.TempDir()
	f := file("suid", "x")
	f.Mode, f.UID = 0o4750, 1234
	x := file("cap", "y")
	x.PAX = map[string]string{"SCHILY.xattr.user.test": "value"}
	dev := ent{Name: "null", Type: tar.TypeChar, Mode: 0o666}
	ovl := ent{Name: "ovl", Type: tar.TypeDir, Mode: 0o755, PAX: map[string]string{"SCHILY.xattr.trusted.overlay.opaque": "y"}}
	a, err := apply(t, dir, Options{}, tartest.Tar(t, f, x, dev, ovl))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := unix.Getxattr(filepath.Join(dir, "ovl"), "trusted.overlay.opaque", make([]byte, 8)); err == nil {
		t.Error("an overlayfs attribute from the layer was applied")
	}
	fi, err := os.Stat(filepath.Join(dir, "suid"))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode()&os.ModeSetuid == 0 || fi.Mode().Perm() != 0o750 || fi.Sys().(*syscall.Stat_t).Uid != 1234 {
		t.Fatalf("suid: mode %v uid %d", fi.Mode(), fi.Sys().(*syscall.Stat_t).Uid)
	}
	if fi, err := os.Lstat(filepath.Join(dir, "null")); err != nil || fi.Mode()&os.ModeCharDevice == 0 {
		t.Fatalf("device: %v %v", fi, err)
	}
	buf := make([]byte, 64)
	n, err := unix.Getxattr(filepath.Join(dir, "cap"), "user.test", buf)
	if err != nil && a.Stats().XattrErrors == 0 {
		t.Fatalf("xattr neither set nor counted: %v", err)
	}
	if err == nil && string(buf[:n]) != "value" {
		t.Fatalf("xattr = %q", buf[:n])
	}
}

// TestContentOnly: an upstream archive's entries carry content and
// permission bits only: no set-ID bits, owners, xattrs or devices, and
// ".wh." names are ordinary files.
func TestContentOnly(t *testing.T) {
	dir := t.TempDir()
	f := file("bin/tool", "x")
	f.Mode, f.UID = 0o4755, 1234
	f.PAX = map[string]string{"SCHILY.xattr.user.test": "value"}
	d := dirEnt("private")
	d.Mode = 0o700
	wh := file(".wh.keep", "not a whiteout")
	dev := ent{Name: "null", Type: tar.TypeChar, Mode: 0o666}
	if _, err := apply(t, dir, Options{ContentOnly: true}, tartest.Tar(t, f, d, wh, dev)); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, "bin/tool"))
	if err != nil || fi.Mode() != 0o755 || fi.Sys().(*syscall.Stat_t).Uid != uint32(os.Geteuid()) {
		t.Fatalf("tool: %v %v", fi.Mode(), err)
	}
	if _, err := unix.Getxattr(filepath.Join(dir, "bin/tool"), "user.test", nil); err == nil {
		t.Error("xattr applied")
	}
	if fi, _ := os.Stat(filepath.Join(dir, "private")); fi.Mode().Perm() != 0o755 {
		t.Errorf("directory mode %v", fi.Mode())
	}
	if b, _ := os.ReadFile(filepath.Join(dir, ".wh.keep")); string(b) != "not a whiteout" {
		t.Errorf(".wh.keep: %q", b)
	}
	if _, err := os.Lstat(filepath.Join(dir, "null")); err == nil {
		t.Error("device created")
	}
}

// deepLayer is a directory n levels deep ("d/d/.../d") with links
// symlinks in its deepest directory, each entry naming its whole path.
func deepLayer(t testing.TB, n, links int) []byte {
	var es []ent
	p := ""
	for i := 0; i < n; i++ {
		p = join(p, "d")
		es = append(es, dirEnt(p))
	}
	for i := 0; i < links; i++ {
		es = append(es, symlink(fmt.Sprintf("%s/l%d", p, i), "../target"))
	}
	return tartest.Tar(t, es...)
}

// TestDeepLayerIsLinear: creating symlinks in a deep directory does not
// resolve the directory again for every entry (it did: each symlink
// cleared the cache, and a 1000-deep path took 1000 steps per entry).
// Replacing and removing symlinks there costs no more either.
func TestDeepLayerIsLinear(t *testing.T) {
	dir := t.TempDir()
	const depth, links = 500, 1000
	a, err := NewApplier(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if err := a.Apply(context.Background(), bytes.NewReader(deepLayer(t, depth, links))); err != nil {
		t.Fatal(err)
	}
	if s := a.root.steps; s > 4*(depth+links) {
		t.Fatalf("%d resolution steps for %d entries", s, depth+links)
	}
	// A second layer replaces each symlink by a directory, then whites
	// it out again.
	deep := strings.TrimSuffix(strings.Repeat("d/", depth), "/")
	var es []ent
	for i := 0; i < links; i++ {
		es = append(es, dirEnt(fmt.Sprintf("%s/l%d", deep, i)), file(fmt.Sprintf("%s/l%d/f", deep, i), "x"))
	}
	before := a.root.steps
	if err := a.Apply(context.Background(), bytes.NewReader(tartest.Tar(t, es...))); err != nil {
		t.Fatal(err)
	}
	es = es[:0]
	for i := 0; i < links; i++ {
		es = append(es, file(fmt.Sprintf("%s/.wh.l%d", deep, i), ""), file(fmt.Sprintf("%s/new%d", deep, i), "y"))
	}
	if err := a.Apply(context.Background(), bytes.NewReader(tartest.Tar(t, es...))); err != nil {
		t.Fatal(err)
	}
	if s := a.root.steps - before; s > 8*links {
		t.Fatalf("%d resolution steps for %d replacing entries", s, 4*links)
	}
	if err := a.Finish(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(filepath.Join(dir, deep, "new7")); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(filepath.Join(dir, deep, "l7")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("whiteout not applied: %v", err)
	}
}

// BenchmarkApplyDeepLayer applies a layer of 10 000 entries: a directory
// 1000 levels deep and 9000 symlinks in it (the shape that took 72 s for
// 500 symlinks when each cleared the resolver's cache). Its floor, the
// cost of the same number of entries at depth 1, is reported beside it.
func BenchmarkApplyDeepLayer(b *testing.B) {
	for _, c := range []struct {
		name  string
		depth int
	}{{"depth1000", 1000}, {"depth1", 1}} {
		layer := deepLayer(b, c.depth, 10000-c.depth)
		b.Run(c.name, func(b *testing.B) {
			b.SetBytes(int64(len(layer)))
			// CPU time (user and system) moves little when other work
			// shares the machine; wall time is ns/op.
			var r0, r1 syscall.Rusage
			syscall.Getrusage(syscall.RUSAGE_SELF, &r0)
			defer func() {
				syscall.Getrusage(syscall.RUSAGE_SELF, &r1)
				cpu := time.Duration(r1.Utime.Nano() - r0.Utime.Nano() + r1.Stime.Nano() - r0.Stime.Nano())
				b.ReportMetric(cpu.Seconds()/float64(b.N), "cpu-s/op")
			}()
			for i := 0; i < b.N; i++ {
				dir := b.TempDir()
				a, err := NewApplier(dir, Options{})
				if err != nil {
					b.Fatal(err)
				}
				if err := a.Apply(context.Background(), bytes.NewReader(layer)); err != nil {
					b.Fatal(err)
				}
				if err := a.Finish(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
