package fsimage

// Fuzz targets for the image readers. Each reads an image from memory the
// way OpenWith does (the extension-release and drop-ins, then the walk for
// special files) with the Go readers only, and must end, with an error or
// not, without a panic and with a one-line error. The seed corpus in
// testdata/fuzz/FuzzNAME/ holds images made by the real tools (rewrite
// them with `go test ./fsimage -run TestFuzzSeeds -update-seeds`) and
// issue 19's crafted image (hang-issue19); `go test` runs every seed,
// `make fuzz` fuzzes each target for a few seconds.
//
// Adding a reader (the GPT disk image reader, say): add FuzzGPT below,
// calling fuzzRead with the format (or the reader's own entry point on the
// bytes), and its seeds to fuzzSeeds; `make fuzz` runs every Fuzz*
// function of the packages in FUZZ_PKGS, nothing else to register.

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sysext/sysext/internal/testenv"
)

var updateSeeds = flag.Bool("update-seeds", false, "rewrite the fuzz seed images in testdata/fuzz with mksquashfs and mkfs.erofs")

// fuzzDeadline only catches a reader that does not end (a hang); the work
// bound itself is checked by TestWorkBudget.
const fuzzDeadline = 20 * time.Second

func FuzzSquashfs(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) { fuzzRead(t, data, Squashfs) })
}

func FuzzEROFS(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) { fuzzRead(t, data, EROFS) })
}

// fuzzRead reads data as an image of format, with its magic number put in
// place so that the fuzzer spends its time inside the reader.
func fuzzRead(t *testing.T, data []byte, format Format) {
	data = bytes.Clone(data)
	for _, m := range magics {
		if m.format == format && len(data) >= m.off+len(m.magic) {
			copy(data[m.off:], m.magic)
			break
		}
	}
	if f, err := DetectBytes(data); err != nil || f != format {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), fuzzDeadline)
	defer cancel()
	var errs []error
	tr, err := openTree(ctx, bytes.NewReader(data), "", int64(len(data)), format)
	errs = append(errs, err)
	if err == nil {
		defer tr.close()
		errs = append(errs, readMetadata(ctx, tr, &Info{}))
		_, _, err := readSpecial(ctx, tr)
		errs = append(errs, err)
	}
	for _, err := range errs {
		if errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("reading a %d-byte %s image did not end within %v", len(data), format, fuzzDeadline)
		}
		if err != nil && strings.Contains(err.Error(), "\n") {
			t.Fatalf("a multi-line error: %q", err)
		}
	}
}

// seedImage is one seed: how the real tools make it.
type seedImage struct {
	target, name string
	tool         string
	args         []string
}

var fuzzSeeds = []seedImage{
	{"FuzzSquashfs", "zstd", "mksquashfs", []string{"-comp", "zstd"}},
	{"FuzzSquashfs", "gzip", "mksquashfs", []string{"-comp", "gzip"}},
	{"FuzzSquashfs", "xz", "mksquashfs", []string{"-comp", "xz"}},
	{"FuzzSquashfs", "lz4", "mksquashfs", []string{"-comp", "lz4"}},
	{"FuzzSquashfs", "lzo", "mksquashfs", []string{"-comp", "lzo"}},
	{"FuzzSquashfs", "lzma", "mksquashfs", []string{"-comp", "lzma"}},
	{"FuzzSquashfs", "uncompressed", "mksquashfs", []string{"-noI", "-noD", "-noF", "-noX"}},
	{"FuzzEROFS", "plain", "mkfs.erofs", nil},
	{"FuzzEROFS", "lz4hc-bakery", "mkfs.erofs", []string{"-zlz4hc,12", "-C65536", "-Efragments,ztailpacking"}},
}

// hangSeed is issue 19's crafted image, kept in FuzzSquashfs's corpus.
const hangSeed = "hang-issue19"

// TestFuzzSeeds checks the checked-in seed corpus: every seed made by the
// tools reads without error, the crafted one is refused as corrupt. With
// -update-seeds it first rebuilds them from a small tree holding what the
// readers must handle: a release file, a drop-in, a symlink, a file of
// several blocks with a tail in a fragment, a setuid file, a capability
// and a device node.
func TestFuzzSeeds(t *testing.T) {
	if *updateSeeds {
		writeSeeds(t)
	}
	check := func(target, name string, wantErr bool) {
		data := readSeed(t, target, name)
		format := Squashfs
		if target == "FuzzEROFS" {
			format = EROFS
		}
		tr, err := openTree(context.Background(), bytes.NewReader(data), "", int64(len(data)), format)
		var special []SpecialFile
		if err == nil {
			defer tr.close()
			if err = readMetadata(context.Background(), tr, &Info{}); err == nil {
				special, _, err = readSpecial(context.Background(), tr)
			}
		}
		if err == nil && len(special) != 3 {
			t.Errorf("%s/%s: special files %+v, want the setuid file, the capability and the device node", target, name, special)
		}
		if wantErr && !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s/%s: %v, want a corrupt image error", target, name, err)
		}
		if !wantErr && err != nil {
			t.Errorf("%s/%s: %v", target, name, err)
		}
	}
	for _, s := range fuzzSeeds {
		check(s.target, s.name, false)
	}
	check("FuzzSquashfs", hangSeed, true)
}

func writeSeeds(t *testing.T) {
	testenv.RequireRoot(t) // the device node and the capability
	tree := t.TempDir()
	files := map[string]string{
		"usr/lib/extension-release.d/extension-release.seed":   "ID=_any\nARCHITECTURE=x86-64\nSYSEXT_VERSION_ID=1\n",
		"usr/lib/systemd/system/multi-user.target.d/10-a.conf": "[Unit]\nUpholds=a.service\n",
		"usr/bin/big": strings.Repeat("0123456789abcdef", 600), // 9600 bytes: two 4 KiB blocks and a tail
		"usr/bin/su":  "su",
	}
	for p, c := range files {
		full := filepath.Join(tree, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	run := func(name string, args ...string) {
		t.Helper()
		if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v %s", name, err, out)
		}
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.Chmod(filepath.Join(tree, "usr/bin/su"), 0o755|os.ModeSetuid))
	// vfs_cap_data revision 2: cap_net_bind_service, permitted and effective.
	must(unix.Setxattr(filepath.Join(tree, "usr/bin/big"), "security.capability",
		[]byte{1, 0, 0, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, 0))
	must(unix.Mknod(filepath.Join(tree, "usr/bin/null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))))
	if err := os.Symlink("big", filepath.Join(tree, "usr/bin/link")); err != nil {
		t.Fatal(err)
	}
	for _, s := range fuzzSeeds {
		testenv.RequireTool(t, s.tool)
		out := filepath.Join(t.TempDir(), "img")
		args := append([]string{tree, out, "-noappend", "-quiet", "-no-progress", "-nopad", "-b", "4096", "-all-root", "-mkfs-time", "0", "-all-time", "0"}, s.args...)
		if s.tool == "mkfs.erofs" {
			args = append(append([]string{"--quiet", "-T0", "--all-root"}, s.args...), out, tree)
		}
		run(s.tool, args...)
		data, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		writeSeed(t, s.target, s.name, data)
	}
	hang, err := os.ReadFile("testdata/squashfs-hang.raw")
	if err != nil {
		t.Fatal(err)
	}
	writeSeed(t, "FuzzSquashfs", hangSeed, hang)
}

// Seeds are in the fuzzing engine's corpus format.
func writeSeed(t *testing.T, target, name string, data []byte) {
	dir := filepath.Join("testdata/fuzz", target)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	body := fmt.Sprintf("go test fuzz v1\n[]byte(%s)\n", strconv.Quote(string(data)))
	if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
}

func readSeed(t *testing.T, target, name string) []byte {
	b, err := os.ReadFile(filepath.Join("testdata/fuzz", target, name))
	if err != nil {
		t.Fatalf("seed %s/%s: %v (rebuild with -update-seeds)", target, name, err)
	}
	lit, ok := strings.CutPrefix(strings.TrimSpace(string(b)), "go test fuzz v1\n[]byte(")
	lit, ok2 := strings.CutSuffix(lit, ")")
	s, err := strconv.Unquote(lit)
	if !ok || !ok2 || err != nil {
		t.Fatalf("seed %s/%s is not a corpus file", target, name)
	}
	return []byte(s)
}

// TestWorkBudget: the work budget refuses an image before its reader is
// done once it is spent, and a real image of many files needs a small part
// of it.
func TestWorkBudget(t *testing.T) {
	tree := t.TempDir()
	for d := range 40 {
		dir := filepath.Join(tree, "usr/share", fmt.Sprintf("d%02d", d))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for f := range 100 {
			if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("file-with-a-longish-name-%03d", f)), []byte{byte(f)}, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	rel := filepath.Join(tree, "usr/lib/extension-release.d/extension-release.many")
	if err := os.MkdirAll(filepath.Dir(rel), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(rel, []byte("ID=_any\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	testenv.RequireTool(t, "mksquashfs")
	testenv.RequireTool(t, "mkfs.erofs")
	sq := filepath.Join(t.TempDir(), "sq")
	er := filepath.Join(t.TempDir(), "er")
	for _, c := range [][]string{{"mksquashfs", tree, sq, "-quiet", "-no-progress", "-comp", "zstd"}, {"mkfs.erofs", "--quiet", er, tree}} {
		if out, err := exec.Command(c[0], c[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v %s", c[0], err, out)
		}
	}
	ctx := context.Background()
	read := func(img string, format Format, limit int64) (used, budget int64, err error) {
		data, err := os.ReadFile(img)
		if err != nil {
			t.Fatal(err)
		}
		tr, err := openTree(ctx, bytes.NewReader(data), "", int64(len(data)), format)
		if err != nil {
			return 0, 0, err
		}
		defer tr.close()
		switch tr := tr.(type) {
		case *squashTree:
			if limit > 0 {
				tr.s.limit = limit
			}
			defer func() { used, budget = tr.s.work, tr.s.limit }()
		case *fsTree:
			if limit > 0 {
				tr.src.limit = limit
			}
			defer func() { used, budget = tr.src.read.Load(), tr.src.limit }()
		}
		if err := readMetadata(ctx, tr, &Info{}); err != nil {
			return 0, 0, err
		}
		_, _, err = readSpecial(ctx, tr)
		return 0, 0, err
	}
	used, budget, err := read(sq, Squashfs, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("squashfs: 4,000 files read and walked with %d units of a %d budget (%.1f%%)", used, budget, 100*float64(used)/float64(budget))
	if used*4 > budget {
		t.Errorf("a real image used more than a quarter of its budget: %d of %d", used, budget)
	}
	if _, _, err := read(sq, Squashfs, used/2); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "units of work") {
		t.Errorf("half the work it needs: %v; want the budget error", err)
	}
	used, budget, err = read(er, EROFS, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("EROFS: 4,000 files read and walked with %d bytes read of a %d budget (%.1f%%)", used, budget, 100*float64(used)/float64(budget))
	if used*4 > budget {
		t.Errorf("a real image used more than a quarter of its budget: %d of %d", used, budget)
	}
	if _, _, err := read(er, EROFS, used/2); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "bytes of reads") {
		t.Errorf("half the reads it needs: %v; want the budget error", err)
	}
}
