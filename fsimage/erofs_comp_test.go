package fsimage

import (
	"context"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/sysext/sysext/internal/testenv"
)

// mkfsErofsWith writes content as extension-release.x with the given
// mkfs.erofs and arguments.
func mkfsErofsWith(t *testing.T, mkfs, content string, args ...string) string {
	t.Helper()
	const name = "usr/lib/extension-release.d/extension-release.x"
	tree := t.TempDir()
	p := filepath.Join(tree, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	img := filepath.Join(t.TempDir(), "x.raw")
	if out, err := exec.Command(mkfs, append(append([]string{"--quiet"}, args...), img, tree)...).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.erofs: %v\n%s", err, out)
	}
	return img
}

// noisyRelease is an extension-release file that compresses to about half
// (hex digits of varied bytes): several 4 KiB clusters in any algorithm.
func noisyRelease() string {
	rnd := make([]byte, 16<<10)
	for i := range rnd {
		rnd[i] = byte(uint32(i)*2654435761>>13) ^ byte(i*7)
	}
	return "ID=_any\n# " + hex.EncodeToString(rnd) + "\n"
}

// A compressed metadata file in an lzma, deflate or zstd EROFS image
// (erofs-utils 1.8): in one cluster it is decompressed here, spread over
// several it is extracted by fsck.erofs; the superblock names the
// compressor either way.
func TestErofsCompressedFileAlgorithms(t *testing.T) {
	bin := testenv.TrixieBin(t)
	t.Setenv("PATH", bin+string(os.PathListSeparator)+os.Getenv("PATH"))
	const name = "usr/lib/extension-release.d/extension-release.x"
	compressible := "ID=_any\n" + strings.Repeat("# compressible\n", 900)
	noisy := noisyRelease()
	for _, alg := range []string{"lzma", "deflate", "zstd"} {
		for _, tc := range []struct {
			what    string
			content string
			args    []string
			oneCl   bool
		}{
			{"one cluster", compressible, []string{"-z" + alg}, true},
			{"one big cluster", compressible, []string{"-z" + alg, "-C65536"}, true},
			{"several clusters", noisy, []string{"-z" + alg, "-C8192"}, false},
		} {
			t.Run(alg+" "+tc.what, func(t *testing.T) {
				img := mkfsErofsWith(t, filepath.Join(bin, "mkfs.erofs"), tc.content, tc.args...)
				f, err := os.Open(img)
				if err != nil {
					t.Fatal(err)
				}
				algs, err := ErofsCompressors(f)
				f.Close()
				if err != nil || !slices.Equal(algs, []string{alg}) {
					t.Fatalf("ErofsCompressors = %v, %v", algs, err)
				}
				data, ok := readCompressedExtent(context.Background(), img, name, 1<<20)
				if ok != tc.oneCl || (ok && string(data) != tc.content) {
					t.Fatalf("readCompressedExtent: ok=%v (want %v), content equal=%v", ok, tc.oneCl, string(data) == tc.content)
				}
				e := &erofsExtract{image: img}
				defer e.close()
				data, err = e.readFile(context.Background(), name, 1<<20)
				if err != nil || string(data) != tc.content {
					t.Fatalf("readFile: %v, content equal=%v", err, string(data) == tc.content)
				}
				if n := extents(t, img, name); tc.oneCl != (n == 1) {
					t.Fatalf("the file has %d extents", n)
				}
				if tc.oneCl == (e.root != nil) {
					t.Fatalf("extracted the image: %v, want %v", e.root != nil, !tc.oneCl)
				}
				info, err := OpenMetadata(context.Background(), img)
				if err != nil || info.Name != "x" || !slices.Equal(info.Compression, []string{alg}) {
					t.Fatalf("OpenMetadata: %v %+v", err, info)
				}
			})
		}
	}
}

// Debian 12's erofs-utils 1.5 maps an lzma file's cluster (dump.erofs),
// so the Go decoder reads it; where its fsck.erofs must extract, the
// error says which erofs-utils the image needs.
func TestErofsLZMAWithOldTools(t *testing.T) {
	bin := testenv.TrixieBin(t)
	for _, tool := range []string{"dump.erofs", "fsck.erofs"} {
		p := testenv.RequireTool(t, tool)
		if out, _ := exec.Command(p, "-V").CombinedOutput(); !strings.Contains(string(out), " 1.5") {
			t.Skipf("%s is not erofs-utils 1.5 (%q): this test is about Debian 12's tools", tool, strings.TrimSpace(string(out)))
		}
	}
	const name = "usr/lib/extension-release.d/extension-release.x"
	content := "ID=_any\n" + strings.Repeat("# compressible\n", 900)
	img := mkfsErofsWith(t, filepath.Join(bin, "mkfs.erofs"), content, "-zlzma", "-C65536")
	data, ok := readCompressedExtent(context.Background(), img, name, 1<<20)
	if !ok || string(data) != content {
		t.Fatalf("readCompressedExtent with dump.erofs 1.5: ok=%v", ok)
	}
	img = mkfsErofsWith(t, filepath.Join(bin, "mkfs.erofs"), noisyRelease(), "-zlzma")
	_, err := OpenMetadata(context.Background(), img)
	if err == nil || !strings.Contains(err.Error(), "compressed with lzma: lzma needs erofs-utils >= 1.6") {
		t.Fatalf("OpenMetadata with fsck.erofs 1.5 = %v", err)
	}
}

// extents is how many extents dump.erofs maps the file to, each
// compressed (a plain file is read by go-erofs and would prove nothing).
func extents(t *testing.T, img, name string) int {
	t.Helper()
	out, err := exec.Command("dump.erofs", "-e", "--path=/"+name, img).CombinedOutput()
	if err != nil {
		t.Fatalf("dump.erofs: %v\n%s", err, out)
	}
	n := 0
	for _, e := range dumpExtent().FindAllSubmatch(out, -1) {
		if string(e[3]) == string(e[6]) {
			t.Fatalf("an extent is stored plain:\n%s", out)
		}
		n++
	}
	return n
}
