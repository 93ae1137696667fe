package builder_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/sysext/sysext/builder"
	"github.com/sysext/sysext/extension"
	"github.com/sysext/sysext/fsimage"
	"github.com/sysext/sysext/internal/testenv"
)

// lzma, deflate and zstd EROFS images, built with erofs-utils 1.8 (the
// Debian 13 tree's), say so in their superblock, read back, build the
// same bytes twice, and merge with the host's systemd-sysext.
func TestBuildEROFSCompressors(t *testing.T) {
	t.Setenv("PATH", testenv.TrixieBin(t)+string(os.PathListSeparator)+os.Getenv("PATH"))
	for _, c := range []struct{ compression, alg string }{
		{"lzma", "lzma"}, {"lzma:9", "lzma"}, {"lzma:109", "lzma"},
		{"deflate", "deflate"}, {"deflate:9", "deflate"},
		{"zstd", "zstd"}, {"zstd:19", "zstd"},
		{"lz4hc", "lz4"}, {"none", ""},
	} {
		t.Run(c.compression, func(t *testing.T) {
			tree := writeTree(t, t.TempDir())
			o := opts(tree, testenv.TempDirNoLeak(t, ".#"), builder.EROFS)
			o.Meta.Arch = extension.HostArch()
			o.Compression = c.compression
			o.SourceDateEpoch = 1700000000
			res, err := builder.Build(context.Background(), o)
			if err != nil {
				t.Fatal(err)
			}
			want := []string{c.alg}
			if c.alg == "" {
				want = nil
			}
			if !slices.Equal(res.Compression, want) {
				t.Fatalf("--compression %s: the image says %v", c.compression, res.Compression)
			}
			info, err := fsimage.OpenMetadata(context.Background(), res.Path)
			if err != nil || info.Name != "sysext-test-hello" || !slices.Equal(info.Compression, want) {
				t.Fatalf("read back: %v %+v", err, info)
			}
			first, err := os.ReadFile(res.Path)
			if err != nil {
				t.Fatal(err)
			}
			o.Output = t.TempDir()
			again, err := builder.Build(context.Background(), o)
			if err != nil {
				t.Fatal(err)
			}
			if second, _ := os.ReadFile(again.Path); string(first) != string(second) {
				t.Fatalf("--compression %s: two builds differ", c.compression)
			}
			if c.alg == "" || c.compression != c.alg {
				return // the merge is the compressor's, not the level's
			}
			testenv.RequireRoot(t)
			link := filepath.Join(t.TempDir(), "sysext-test-hello.raw")
			if err := os.Link(res.Path, link); err != nil {
				t.Fatal(err)
			}
			out, err := testenv.MergeAndRun(t, []string{link}, "sysext-test-hello", "head -c 18 /usr/share/sysext-test-hello/data.txt")
			if err != nil || !strings.Contains(out, helloVersion) || !strings.Contains(out, "compressible data") {
				t.Fatalf("merge of a %s EROFS image: %v\n%s", c.alg, err, out)
			}
		})
	}
}

// A mkfs.erofs without the compressor asked for (Debian 12's erofs-utils
// 1.5 has lz4 and lz4hc only) is refused before any work, in one line
// naming the tool, its version and what to do; nothing is left behind.
func TestBuildEROFSCompressorMissing(t *testing.T) {
	host := testenv.RequireTool(t, "mkfs.erofs")
	version := ""
	out, _ := exec.Command(host, "-V").CombinedOutput()
	if m := regexp.MustCompile(`mkfs\.erofs (?:\(erofs-utils\) )?([0-9][0-9.]*)`).FindSubmatch(out); m != nil {
		version = string(m[1])
	}
	// Only this mkfs.erofs on PATH.
	bin := t.TempDir()
	if err := os.Symlink(host, filepath.Join(bin, "mkfs.erofs")); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", bin)
	for _, c := range []struct{ alg, minimum string }{{"lzma", "1.6"}, {"deflate", "1.7"}, {"zstd", "1.8"}} {
		t.Run(c.alg, func(t *testing.T) {
			out := testenv.TempDirNoLeak(t, ".#")
			o := opts(writeTree(t, t.TempDir()), out, builder.EROFS)
			o.Compression = c.alg + ":6"
			res, err := builder.Build(context.Background(), o)
			if version >= c.minimum && !strings.HasPrefix(version, "1.5") {
				// A newer host tool must build it.
				if err != nil || !slices.Equal(res.Compression, []string{c.alg}) {
					t.Fatalf("mkfs.erofs %s: %v", version, err)
				}
				return
			}
			if err == nil {
				t.Fatalf("mkfs.erofs %q built a %s image", version, c.alg)
			}
			msg := err.Error()
			for _, want := range []string{"--compression " + c.alg + ": mkfs.erofs " + version + " (", "cannot write " + c.alg + " EROFS images", "install erofs-utils >= " + c.minimum, "or use --compression lz4hc"} {
				if !strings.Contains(msg, want) {
					t.Errorf("error %q lacks %q", msg, want)
				}
			}
			if strings.Contains(msg, "\n") || !errors.Is(err, builder.ErrInvalidOption) {
				t.Errorf("error spans lines or is not an option error: %q", msg)
			}
			if err := builder.CheckOptions(o); err == nil || err.Error() != msg {
				t.Errorf("CheckOptions = %v, want the same refusal", err)
			}
			if got := listDir(t, out); len(got) != 0 {
				t.Fatalf("a refused build left %v", got)
			}
		})
	}
}
