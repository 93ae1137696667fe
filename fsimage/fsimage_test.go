package fsimage_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/sysext/sysext/fsimage"
	"github.com/sysext/sysext/internal/testenv"
)

const release = "ID=_any\nARCHITECTURE=arm64\nSYSEXT_VERSION_ID=2.1\nSYSEXT_SCOPE=\"system initrd\"\nEXTENSION_RELOAD_MANAGER=1\n"

// writeTree makes an extension tree with a release file, two drop-ins
// (one with two units, one outside [Unit]), and some content.
func writeTree(t testing.TB, name, rel string) string {
	t.Helper()
	dir := t.TempDir()
	files := map[string]string{
		"usr/lib/extension-release.d/extension-release." + name: rel,
		"usr/lib/systemd/system/multi-user.target.d/10-a.conf":  "[Unit]\nUpholds=a.service b.service\n",
		"usr/lib/systemd/system/sockets.target.d/10-a.conf":     "# comment\n[Unit]\nUpholds=a.socket\n[Install]\nUpholds=ignored.service\n",
		"usr/lib/systemd/system/a.service":                      "[Service]\nExecStart=/bin/true\n",
		"usr/lib/systemd/system/not-a-target.d/x.conf":          "[Unit]\nUpholds=nope.service\n",
		"usr/bin/a": strings.Repeat("binary-ish content ", 5000),
	}
	for p, c := range files {
		full := filepath.Join(dir, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func mksquashfs(t testing.TB, tree string, args ...string) string {
	t.Helper()
	testenv.RequireTool(t, "mksquashfs")
	out := filepath.Join(t.TempDir(), "img.raw")
	cmd := exec.Command("mksquashfs", append([]string{tree, out, "-noappend", "-quiet", "-no-progress"}, args...)...)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("mksquashfs: %v\n%s", err, b)
	}
	return out
}

func mkfsErofs(t *testing.T, tree string, args ...string) string {
	t.Helper()
	testenv.RequireTool(t, "mkfs.erofs")
	out := filepath.Join(t.TempDir(), "img.raw")
	cmd := exec.Command("mkfs.erofs", append(append([]string{"--quiet"}, args...), out, tree)...)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("mkfs.erofs: %v\n%s", err, b)
	}
	return out
}

func fileDigest(t *testing.T, p string) string {
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	s := sha256.Sum256(data)
	return "sha256:" + hex.EncodeToString(s[:])
}

// TestOpenFormats reads images written by the real tools with every
// compression they offer here, including the Flatcar bakery's EROFS
// options (tail packing, fragments), and a release file big enough to be
// compressed (the fsck.erofs fallback).
func TestOpenFormats(t *testing.T) {
	big := release + strings.Repeat("# padding so the file is compressed\n", 400)
	// Random text compresses too little to fit one 4 KiB cluster.
	rnd := make([]byte, 12<<10)
	for i := range rnd {
		rnd[i] = byte(uint32(i)*2654435761>>13) ^ byte(i*7)
	}
	noisy := release + "# " + base64.StdEncoding.EncodeToString(rnd) + "\n"
	cases := []struct {
		name   string
		rel    string
		format fsimage.Format
		build  func(t *testing.T, tree string) string
	}{
		{"squashfs gzip", release, fsimage.Squashfs, func(t *testing.T, d string) string { return mksquashfs(t, d, "-comp", "gzip") }},
		{"squashfs xz", release, fsimage.Squashfs, func(t *testing.T, d string) string { return mksquashfs(t, d, "-comp", "xz") }},
		{"squashfs lzo", release, fsimage.Squashfs, func(t *testing.T, d string) string { return mksquashfs(t, d, "-comp", "lzo") }},
		{"squashfs lz4", release, fsimage.Squashfs, func(t *testing.T, d string) string { return mksquashfs(t, d, "-comp", "lz4") }},
		{"squashfs zstd", release, fsimage.Squashfs, func(t *testing.T, d string) string { return mksquashfs(t, d, "-comp", "zstd") }},
		{"squashfs zstd big release", big, fsimage.Squashfs, func(t *testing.T, d string) string { return mksquashfs(t, d, "-comp", "zstd") }},
		{"squashfs lz4 big release", big, fsimage.Squashfs, func(t *testing.T, d string) string { return mksquashfs(t, d, "-comp", "lz4") }},
		{"squashfs uncompressed", release, fsimage.Squashfs, func(t *testing.T, d string) string {
			return mksquashfs(t, d, "-noI", "-noD", "-noF", "-noX")
		}},
		{"erofs plain", release, fsimage.EROFS, func(t *testing.T, d string) string { return mkfsErofs(t, d) }},
		{"erofs lz4", release, fsimage.EROFS, func(t *testing.T, d string) string { return mkfsErofs(t, d, "-zlz4") }},
		{"erofs lz4hc", release, fsimage.EROFS, func(t *testing.T, d string) string { return mkfsErofs(t, d, "-zlz4hc") }},
		{"erofs bakery options", release, fsimage.EROFS, func(t *testing.T, d string) string {
			return mkfsErofs(t, d, "-zlz4hc,12", "-C65536", "-Efragments,ztailpacking", "--all-root")
		}},
		{"erofs lz4 big release", big, fsimage.EROFS, func(t *testing.T, d string) string { return mkfsErofs(t, d, "-zlz4hc") }},
		{"erofs bakery big release", big, fsimage.EROFS, func(t *testing.T, d string) string {
			return mkfsErofs(t, d, "-zlz4hc,12", "-C65536", "-Efragments,ztailpacking")
		}},
		// Several clusters: read through fsck.erofs --extract.
		{"erofs release in several clusters", noisy, fsimage.EROFS, func(t *testing.T, d string) string { return mkfsErofs(t, d, "-zlz4") }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			img := tc.build(t, writeTree(t, "hello", tc.rel))
			info, err := fsimage.Open(context.Background(), img)
			if err != nil {
				t.Fatal(err)
			}
			if info.Format != tc.format || info.Name != "hello" || info.Path != img {
				t.Fatalf("Open = %s %s %s", info.Format, info.Name, info.Path)
			}
			if info.Meta.Version != "2.1" || info.Meta.Arch != "arm64" || info.Meta.ID != "_any" || !info.Meta.ReloadManager || len(info.Meta.Scopes) != 2 {
				t.Fatalf("metadata %+v", info.Meta)
			}
			// Every reader gives the file's exact bytes, comments included.
			if !bytes.Equal(info.ReleaseBytes, []byte(tc.rel)) {
				t.Fatalf("ReleaseBytes: %d bytes differ from the %d written", len(info.ReleaseBytes), len(tc.rel))
			}
			if got := strings.Join(info.Upholds, " "); got != "a.service a.socket b.service" {
				t.Fatalf("Upholds = %q", got)
			}
			st, _ := os.Stat(img)
			if info.Size != st.Size() || info.Digest != fileDigest(t, img) {
				t.Fatalf("size/digest %d %s, want %d %s", info.Size, info.Digest, st.Size(), fileDigest(t, img))
			}
			meta, err := fsimage.OpenMetadata(context.Background(), img)
			if err != nil || meta.Digest != "" || meta.Name != "hello" {
				t.Fatalf("OpenMetadata = %+v, %v", meta, err)
			}
		})
	}
}

// TestDetect is the one table of magic numbers: Detect (a file) and
// DetectBytes (the head a download keeps) agree on every row.
func TestDetect(t *testing.T) {
	mk := func(off int, magic []byte, size int) []byte {
		b := make([]byte, size)
		copy(b[off:], magic)
		return b
	}
	tests := []struct {
		name string
		data []byte
		want fsimage.Format
	}{
		{"squashfs", mk(0, []byte("hsqs"), 4096), fsimage.Squashfs},
		{"squashfs alone", []byte("hsqs"), fsimage.Squashfs},
		{"erofs", mk(1024, []byte{0xE2, 0xE1, 0xF5, 0xE0}, 4096), fsimage.EROFS},
		{"gpt 512-byte sectors", mk(512, []byte("EFI PART"), 4096), fsimage.GPT},
		{"gpt 4096-byte sectors", mk(4096, []byte("EFI PART"), 8192), fsimage.GPT},
		{"gpt 4096 at the very end", mk(4096, []byte("EFI PART"), 4104), fsimage.GPT},
		{"gpt 4096 cut short", mk(4096, []byte("EFI PART"), 4104)[:4103], ""},
		{"gpt magic elsewhere", mk(2048, []byte("EFI PART"), 8192), ""},
		{"zeros", make([]byte, 4096), ""},
		{"short", []byte("hsq"), ""},
		{"empty", nil, ""},
		{"text", []byte(strings.Repeat("hello world\n", 200)), ""},
		{"erofs magic big-endian", mk(1024, []byte{0xE0, 0xF5, 0xE1, 0xE2}, 4096), ""},
	}
	for _, tt := range tests {
		got, err := fsimage.Detect(bytes.NewReader(tt.data))
		head := tt.data[:min(len(tt.data), fsimage.HeadSize)]
		gotBytes, errBytes := fsimage.DetectBytes(head)
		if got != gotBytes || (err == nil) != (errBytes == nil) {
			t.Errorf("%s: Detect = %q, %v but DetectBytes = %q, %v", tt.name, got, err, gotBytes, errBytes)
		}
		if tt.want == "" {
			if !errors.Is(err, fsimage.ErrUnknownFormat) {
				t.Errorf("%s: Detect = %q, %v; want ErrUnknownFormat", tt.name, got, err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("%s: Detect = %q, %v; want %q", tt.name, got, err, tt.want)
		}
	}
}

func writeFile(t *testing.T, data []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "file.raw")
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestOpenRefuses: each bad image is a one-line error naming the file.
func TestOpenRefuses(t *testing.T) {
	testenv.RequireTool(t, "mksquashfs")
	testenv.RequireTool(t, "mkfs.erofs")
	gpt := make([]byte, 8192)
	copy(gpt[512:], "EFI PART")
	noRelease := t.TempDir()
	os.MkdirAll(filepath.Join(noRelease, "usr/bin"), 0o755)
	two := writeTree(t, "one", release)
	os.WriteFile(filepath.Join(two, "usr/lib/extension-release.d/extension-release.two"), []byte(release), 0o644)
	symlinked := writeTree(t, "x", release)
	os.Remove(filepath.Join(symlinked, "usr/lib/extension-release.d/extension-release.x"))
	os.Symlink("/etc/os-release", filepath.Join(symlinked, "usr/lib/extension-release.d/extension-release.x"))
	huge := writeTree(t, "huge", "A="+strings.Repeat("x", 70<<10)+"\n")
	garbage := writeTree(t, "garbage", "this is not a release file\n")
	badName := writeTree(t, "-bad", release)
	badArch := writeTree(t, "arch", "ID=_any\nARCHITECTURE=sparc\n")
	valid := mksquashfs(t, writeTree(t, "ok", release), "-noD", "-noF")
	validData, _ := os.ReadFile(valid)
	validErofs, _ := os.ReadFile(mkfsErofs(t, writeTree(t, "ok", release), "-zlz4"))

	tests := []struct {
		name string
		path string
		want string
	}{
		{"text file", writeFile(t, []byte("hello\n")), "is not a squashfs, EROFS or GPT image"},
		{"empty file", writeFile(t, nil), "is not a squashfs, EROFS or GPT image"},
		{"gpt", writeFile(t, gpt), "is a GPT disk image"},
		{"directory", t.TempDir(), "is not a regular file"},
		{"missing", filepath.Join(t.TempDir(), "nope.raw"), "no such file"},
		{"no release squashfs", mksquashfs(t, noRelease), "has no usr/lib/extension-release.d/extension-release.NAME"},
		{"no release erofs", mkfsErofs(t, noRelease, "-zlz4"), "has no usr/lib/extension-release.d/extension-release.NAME"},
		{"no release squashfs lz4", mksquashfs(t, noRelease, "-comp", "lz4"), "has no usr/lib/extension-release.d/extension-release.NAME"},
		{"two releases", mksquashfs(t, two), "holds 2 extension-release files (one, two)"},
		{"two releases erofs", mkfsErofs(t, two), "holds 2 extension-release files"},
		{"symlinked release", mksquashfs(t, symlinked), "is a symlink"},
		{"symlinked release erofs", mkfsErofs(t, symlinked), "is a symlink"},
		{"symlinked release lz4", mksquashfs(t, symlinked, "-comp", "lz4"), "is a symlink"},
		{"huge release", mksquashfs(t, huge), "more than the 65536"},
		{"huge release erofs", mkfsErofs(t, huge, "-zlz4"), "more than the 65536"},
		{"huge release lz4", mksquashfs(t, huge, "-comp", "lz4"), "more than the 65536"},
		{"garbage release", mksquashfs(t, garbage), "line 1"},
		{"bad name", mksquashfs(t, badName), "starts with '-'"},
		{"bad arch", mkfsErofs(t, badArch), "unknown architecture"},
		// A name from the image never splits the message.
		{"newline in name", mksquashfs(t, writeTree(t, "a\nb", release)), "extension-release.a\\nb"},
		{"newline in name erofs", mkfsErofs(t, writeTree(t, "a\nb", release)), "extension-release.a\\nb"},
		{"truncated squashfs", writeFile(t, validData[:len(validData)/2]), "truncated squashfs image"},
		{"truncated erofs", writeFile(t, validErofs[:len(validErofs)/2]), "truncated EROFS image"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := fsimage.Open(context.Background(), tt.path)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Open = %v, want an error containing %q", err, tt.want)
			}
			if !strings.Contains(err.Error(), filepath.Base(tt.path)) {
				t.Errorf("error %q does not name the file", err)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error spans several lines: %q", err)
			}
		})
	}
	if _, err := fsimage.Open(context.Background(), writeFile(t, gpt)); !errors.Is(err, fsimage.ErrBadGPT) {
		t.Errorf("GPT error %v does not wrap ErrBadGPT", err)
	}
}

// TestOpenCorruptNeverPanics damages a valid image of each format at many
// places; Open may fail or succeed but must never panic or hang.
func TestOpenCorruptNeverPanics(t *testing.T) {
	tree := writeTree(t, "hello", release)
	for _, img := range []string{mksquashfs(t, tree, "-comp", "gzip"), mksquashfs(t, tree, "-comp", "zstd"), mkfsErofs(t, tree, "-zlz4")} {
		data, err := os.ReadFile(img)
		if err != nil {
			t.Fatal(err)
		}
		dir := t.TempDir()
		step := len(data) / 200
		if step == 0 {
			step = 1
		}
		for off := 0; off < len(data); off += step {
			bad := append([]byte(nil), data...)
			for i := off; i < off+8 && i < len(bad); i++ {
				bad[i] ^= 0xA5
			}
			p := filepath.Join(dir, "bad.raw")
			if err := os.WriteFile(p, bad, 0o644); err != nil {
				t.Fatal(err)
			}
			_, _ = fsimage.OpenMetadata(context.Background(), p)
		}
	}
}

func TestDigestCache(t *testing.T) {
	img := mksquashfs(t, writeTree(t, "hello", release))
	real := fileDigest(t, img)
	// A cached value for this very file is used...
	info, err := fsimage.Open(context.Background(), img)
	if err != nil || info.Digest != real {
		t.Fatalf("Open = %v, %v", info, err)
	}
	buf := make([]byte, 256)
	n, err := unix.Getxattr(img, fsimage.DigestXattr, buf)
	if err != nil {
		t.Skipf("this filesystem keeps no user xattrs (%v): the cache is best effort", err)
	}
	key, _, _ := strings.Cut(string(buf[:n]), " ")
	fake := "sha256:" + strings.Repeat("0", 64)
	if err := unix.Setxattr(img, fsimage.DigestXattr, []byte(key+" "+fake), 0); err != nil {
		t.Fatal(err)
	}
	if info, _ := fsimage.Open(context.Background(), img); info.Digest != fake {
		t.Fatalf("cache not used: %s", info.Digest)
	}
	// ...never without CacheDigest...
	if info, _ := fsimage.OpenWith(context.Background(), img, fsimage.Options{Digest: true}); info.Digest != real {
		t.Fatalf("uncached Open = %s, want %s", info.Digest, real)
	}
	// ...and not once the file changed.
	f, err := os.OpenFile(img, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Write(make([]byte, 4096))
	f.Close()
	if info, _ := fsimage.Open(context.Background(), img); info.Digest != fileDigest(t, img) {
		t.Fatalf("stale cache used after a change: %s", info.Digest)
	}
}

func TestParseUpholds(t *testing.T) {
	tests := map[string]string{
		"[Unit]\nUpholds=a.service\n":                      "a.service",
		"[Unit]\nUpholds=a.service b.socket\nUpholds=c\n":  "a.service b.socket c",
		"[Unit]\nUpholds=a\nUpholds=\nUpholds=b\n":         "b",
		"[Service]\nUpholds=a\n":                           "",
		"Upholds=a\n":                                      "",
		"# [Unit]\n[Unit]\n; Upholds=x\n  Upholds = y  \n": "y",
		"[Unit]\r\nUpholds=a.service\r\n":                  "a.service",
	}
	for in, want := range tests {
		if got := strings.Join(fsimage.ParseUpholds([]byte(in)), " "); got != want {
			t.Errorf("ParseUpholds(%q) = %q, want %q", in, got, want)
		}
	}
}

func FuzzParseUpholds(f *testing.F) {
	f.Add([]byte("[Unit]\nUpholds=a.service b.socket\n"))
	f.Add([]byte("[Unit\nUpholds=\n[]\n=\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, u := range fsimage.ParseUpholds(data) {
			if u == "" || strings.ContainsAny(u, " \t\n") {
				t.Fatalf("ParseUpholds(%q) returned %q", data, u)
			}
		}
	})
}
