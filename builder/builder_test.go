package builder_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"

	"github.com/sysext/sysext/builder"
	"github.com/sysext/sysext/extension"
	"github.com/sysext/sysext/fsimage"
	"github.com/sysext/sysext/internal/testenv"
)

var formats = []builder.ImageFormat{builder.Squashfs, builder.EROFS}

func requireTool(t *testing.T, f builder.ImageFormat) {
	t.Helper()
	if f == builder.EROFS {
		testenv.RequireTool(t, "mkfs.erofs")
	} else {
		testenv.RequireTool(t, "mksquashfs")
	}
}

// helloVersion is what the test program prints; no host has it.
const helloVersion = "sysext-test-hello 7.7 (builder test, 0c5e11a)"

// writeTree makes a small extension tree: a program printing helloVersion,
// a service and a socket, under dir.
func writeTree(t *testing.T, dir string) string {
	t.Helper()
	files := map[string]string{
		"usr/bin/sysext-test-hello":                        "#!/bin/sh\necho '" + helloVersion + "'\n",
		"usr/lib/systemd/system/sysext-test-hello.service": "[Service]\nExecStart=/usr/bin/sysext-test-hello\n",
		"usr/lib/systemd/system/sysext-test-hello.socket":  "[Socket]\nListenStream=/run/sysext-test-hello.sock\n",
		"usr/share/sysext-test-hello/data.txt":             strings.Repeat("compressible data\n", 500),
		"opt/sysext-test-hello/README":                     "opt content\n",
		"usr/lib/systemd/system/other@.service":            "[Service]\nExecStart=/bin/true\n",
	}
	for p, c := range files {
		full := filepath.Join(dir, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		mode := os.FileMode(0o644)
		if strings.Contains(p, "/bin/") {
			mode = 0o755
		}
		if err := os.WriteFile(full, []byte(c), mode); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("sysext-test-hello", filepath.Join(dir, "usr/bin/sysext-test-hello-link")); err != nil {
		t.Fatal(err)
	}
	return dir
}

func opts(tree, out string, f builder.ImageFormat) builder.Options {
	return builder.Options{
		Tree:   tree,
		Meta:   extension.Metadata{Name: "sysext-test-hello", Version: "7.7", Arch: "x86-64"},
		Format: f,
		Output: out,
	}
}

// listDir returns every name under dir, recursively, sorted.
func listDir(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if p != dir {
			rel, _ := filepath.Rel(dir, p)
			out = append(out, rel)
		}
		return nil
	})
	sort.Strings(out)
	return out
}

func TestBuildBothFormats(t *testing.T) {
	for _, f := range formats {
		t.Run(string(f), func(t *testing.T) {
			requireTool(t, f)
			tree := writeTree(t, t.TempDir())
			out := testenv.TempDirNoLeak(t, ".#")
			o := opts(tree, out, f)
			o.Enable = []string{"sysext-test-hello.socket", "sysext-test-hello.service"}
			o.Digest = true
			res, err := builder.Build(context.Background(), o)
			if err != nil {
				t.Fatal(err)
			}
			want := filepath.Join(out, "sysext-test-hello-7.7-x86-64.raw")
			if res.Path != want || res.Format != f {
				t.Fatalf("result %s (%s), want %s (%s)", res.Path, res.Format, want, f)
			}
			if got := listDir(t, out); len(got) != 1 {
				t.Fatalf("output dir holds %v, want only the image", got)
			}
			data, err := os.ReadFile(want)
			if err != nil {
				t.Fatal(err)
			}
			sum := sha256.Sum256(data)
			if res.Digest != "sha256:"+hex.EncodeToString(sum[:]) || res.Size != int64(len(data)) {
				t.Fatalf("result digest/size %s/%d do not match the file", res.Digest, res.Size)
			}
			info, err := fsimage.OpenMetadata(context.Background(), want)
			if err != nil {
				t.Fatal(err)
			}
			wantRel := "ID=_any\nARCHITECTURE=x86-64\nEXTENSION_RELOAD_MANAGER=1\nSYSEXT_ID=sysext-test-hello\nSYSEXT_VERSION_ID=7.7\n"
			if info.Name != "sysext-test-hello" || info.Release.String() != wantRel {
				t.Fatalf("image carries extension-release.%s:\n%s\nwant:\n%s", info.Name, info.Release, wantRel)
			}
			if got := strings.Join(info.Upholds, " "); got != "sysext-test-hello.service sysext-test-hello.socket" {
				t.Fatalf("image upholds %q", got)
			}
			if !info.Meta.ReloadManager || info.Meta.Version != "7.7" || info.Meta.Arch != "x86-64" {
				t.Fatalf("metadata %+v", info.Meta)
			}
		})
	}
}

// TestBuildImageContent looks inside with the formats' own tools: owners
// are root, times are the epoch, drop-ins are where systemd reads them.
func TestBuildImageContent(t *testing.T) {
	for _, f := range formats {
		t.Run(string(f), func(t *testing.T) {
			requireTool(t, f)
			tree := writeTree(t, t.TempDir())
			if os.Geteuid() == 0 {
				if err := os.Chown(filepath.Join(tree, "usr/bin/sysext-test-hello"), 1234, 5678); err != nil {
					t.Fatal(err)
				}
			}
			out := t.TempDir()
			o := opts(tree, out, f)
			o.Enable = []string{"sysext-test-hello.service", "other@x.service"}
			o.SourceDateEpoch = 1700000000
			res, err := builder.Build(context.Background(), o)
			if err != nil {
				t.Fatal(err)
			}
			dir := filepath.Join(t.TempDir(), "x")
			if f == builder.Squashfs {
				testenv.RequireTool(t, "unsquashfs")
				run(t, "unsquashfs", "-no-xattrs", "-d", dir, res.Path)
			} else {
				testenv.RequireTool(t, "fsck.erofs")
				run(t, "fsck.erofs", "--extract="+dir, "--preserve", res.Path)
			}
			for _, p := range []string{"usr/bin/sysext-test-hello", "usr/lib/systemd/system/multi-user.target.d/sysext-test-hello-sysext-test-hello.service.conf", "usr/lib/systemd/system/multi-user.target.d/sysext-test-hello-other@x.service.conf", "opt/sysext-test-hello/README"} {
				fi, err := os.Lstat(filepath.Join(dir, p))
				if err != nil {
					t.Fatalf("image lacks %s: %v", p, err)
				}
				st := fi.Sys().(*syscall.Stat_t)
				if os.Geteuid() == 0 && (st.Uid != 0 || st.Gid != 0) {
					t.Errorf("%s is owned by %d:%d, want 0:0", p, st.Uid, st.Gid)
				}
				if fi.ModTime().Unix() != 1700000000 {
					t.Errorf("%s has mtime %d, want SOURCE_DATE_EPOCH 1700000000", p, fi.ModTime().Unix())
				}
			}
			if fi, err := os.Stat(filepath.Join(dir, "usr/bin/sysext-test-hello")); err != nil || fi.Mode().Perm() != 0o755 {
				t.Errorf("program mode %v, %v; want 0755", fi.Mode(), err)
			}
			if l, err := os.Readlink(filepath.Join(dir, "usr/bin/sysext-test-hello-link")); err != nil || l != "sysext-test-hello" {
				t.Errorf("symlink = %q, %v", l, err)
			}
		})
	}
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
	return string(out)
}

// TestBuildReproducible builds the same content twice, from two copies of
// the tree made at different times and staged in different directories,
// and compares the bytes.
func TestBuildReproducible(t *testing.T) {
	for _, f := range formats {
		t.Run(string(f), func(t *testing.T) {
			requireTool(t, f)
			var images [][]byte
			for i := 0; i < 2; i++ {
				tree := writeTree(t, t.TempDir())
				// Different mtimes and inode numbers for every copy.
				os.Chtimes(filepath.Join(tree, "usr/bin/sysext-test-hello"), time0.AddDate(0, 0, i), time0.AddDate(0, 0, i))
				res, err := builder.Build(context.Background(), opts(tree, t.TempDir(), f))
				if err != nil {
					t.Fatal(err)
				}
				data, err := os.ReadFile(res.Path)
				if err != nil {
					t.Fatal(err)
				}
				images = append(images, data)
			}
			if !bytes.Equal(images[0], images[1]) {
				t.Fatalf("two builds of the same tree differ (%d and %d bytes)", len(images[0]), len(images[1]))
			}
			// And the epoch is what changes them.
			o := opts(writeTree(t, t.TempDir()), t.TempDir(), f)
			o.SourceDateEpoch = 86400
			res, err := builder.Build(context.Background(), o)
			if err != nil {
				t.Fatal(err)
			}
			other, _ := os.ReadFile(res.Path)
			if bytes.Equal(other, images[0]) {
				t.Fatal("a different SOURCE_DATE_EPOCH gives the same bytes")
			}
		})
	}
}

// snapshot records everything about a tree a build could change.
func snapshot(t *testing.T, dir string) string {
	t.Helper()
	var b strings.Builder
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		fmt.Fprintf(&b, "%s %v %d", rel, fi.Mode(), fi.Size())
		if !fi.IsDir() {
			fmt.Fprintf(&b, " %d", fi.ModTime().UnixNano())
		}
		if fi.Mode().IsRegular() {
			data, _ := os.ReadFile(p)
			fmt.Fprintf(&b, " %x", sha256.Sum256(data))
		}
		if fi.Mode()&fs.ModeSymlink != 0 {
			l, _ := os.Readlink(p)
			b.WriteString(" -> " + l)
		}
		b.WriteString("\n")
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// TestBuildNeverModifiesTree gives the tree its own extension-release file
// and a drop-in with the name the build writes: the image gets the build's
// versions, the tree keeps its own, byte for byte.
func TestBuildNeverModifiesTree(t *testing.T) {
	for _, f := range formats {
		t.Run(string(f), func(t *testing.T) {
			requireTool(t, f)
			tree := writeTree(t, t.TempDir())
			relPath := filepath.Join(tree, "usr/lib/extension-release.d/extension-release.sysext-test-hello")
			os.MkdirAll(filepath.Dir(relPath), 0o755)
			if err := os.WriteFile(relPath, []byte("# mine\nID=_any\nEXTRA_FIELD=kept\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			drop := filepath.Join(tree, "usr/lib/systemd/system/multi-user.target.d/sysext-test-hello-sysext-test-hello.service.conf")
			os.MkdirAll(filepath.Dir(drop), 0o755)
			if err := os.WriteFile(drop, []byte("[Unit]\nUpholds=nothing.service\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			before := snapshot(t, tree)
			o := opts(tree, t.TempDir(), f)
			o.Enable = []string{"sysext-test-hello.service"}
			res, err := builder.Build(context.Background(), o)
			if err != nil {
				t.Fatal(err)
			}
			if after := snapshot(t, tree); after != before {
				t.Fatalf("the build changed the input tree:\nbefore:\n%s\nafter:\n%s", before, after)
			}
			info, err := fsimage.OpenMetadata(context.Background(), res.Path)
			if err != nil {
				t.Fatal(err)
			}
			if info.Release.Get("EXTRA_FIELD") != "kept" || info.Release.Get("SYSEXT_VERSION_ID") != "7.7" {
				t.Fatalf("image release is\n%s\nwant the tree's fields plus the build's", info.Release)
			}
			if strings.Join(info.Upholds, " ") != "sysext-test-hello.service" {
				t.Fatalf("image upholds %v, want the build's drop-in", info.Upholds)
			}
		})
	}
}

// TestBuildRefusesBadInput: every refused tree or option is a clear error
// naming the problem, and leaves nothing in the output directory.
func TestBuildRefusesBadInput(t *testing.T) {
	testenv.RequireTool(t, "mksquashfs")
	tests := []struct {
		name  string
		setup func(t *testing.T, tree string, o *builder.Options)
		want  string
	}{
		{"top-level etc", func(t *testing.T, tree string, o *builder.Options) {
			os.MkdirAll(filepath.Join(tree, "etc/foo"), 0o755)
		}, "etc: systemd-sysext merges only usr/ and opt/"},
		{"top-level file", func(t *testing.T, tree string, o *builder.Options) {
			os.WriteFile(filepath.Join(tree, "README"), nil, 0o644)
		}, "README: systemd-sysext merges only usr/ and opt/"},
		{"no usr", func(t *testing.T, tree string, o *builder.Options) {
			os.RemoveAll(filepath.Join(tree, "usr"))
		}, "has no usr/ directory"},
		{"usr is a symlink", func(t *testing.T, tree string, o *builder.Options) {
			os.Rename(filepath.Join(tree, "usr"), filepath.Join(t.TempDir(), "u"))
			os.Symlink("/usr", filepath.Join(tree, "usr"))
		}, "usr must be a directory"},
		{"tree missing", func(t *testing.T, tree string, o *builder.Options) {
			o.Tree = filepath.Join(tree, "nonexistent")
		}, "no such file"},
		{"tree is a file", func(t *testing.T, tree string, o *builder.Options) {
			o.Tree = filepath.Join(tree, "usr/bin/sysext-test-hello")
		}, "is not a directory"},
		{"no tree", func(t *testing.T, tree string, o *builder.Options) { o.Tree = "" }, "no tree given"},
		{"another extension's release file", func(t *testing.T, tree string, o *builder.Options) {
			os.MkdirAll(filepath.Join(tree, extension.ReleaseDir), 0o755)
			os.WriteFile(filepath.Join(tree, extension.ReleasePath("other")), []byte("ID=_any\n"), 0o644)
		}, `belongs to extension "other"`},
		{"contradicting release file", func(t *testing.T, tree string, o *builder.Options) {
			os.MkdirAll(filepath.Join(tree, extension.ReleaseDir), 0o755)
			os.WriteFile(filepath.Join(tree, extension.ReleasePath("sysext-test-hello")), []byte("ID=fedora\nVERSION_ID=39\n"), 0o644)
		}, "sets ID=fedora but the build says ID=_any (--os)"},
		{"unparsable release file", func(t *testing.T, tree string, o *builder.Options) {
			os.MkdirAll(filepath.Join(tree, extension.ReleaseDir), 0o755)
			os.WriteFile(filepath.Join(tree, extension.ReleasePath("sysext-test-hello")), []byte("garbage\n"), 0o644)
		}, "line 1"},
		{"enable a missing unit", func(t *testing.T, tree string, o *builder.Options) {
			o.Enable = []string{"missing.service"}
		}, "--enable missing.service: "},
		{"enable a template", func(t *testing.T, tree string, o *builder.Options) {
			o.Enable = []string{"other@.service"}
		}, "a template cannot be started"},
		{"enable a mount", func(t *testing.T, tree string, o *builder.Options) {
			o.Enable = []string{"x.mount"}
		}, "only .service, .socket, .timer and .path"},
		{"enable with a slash", func(t *testing.T, tree string, o *builder.Options) {
			o.Enable = []string{"../x.service"}
		}, "--enable ../x.service"},
		{"bad name", func(t *testing.T, tree string, o *builder.Options) { o.Meta.Name = "a/b" }, `extension name "a/b"`},
		{"hidden name", func(t *testing.T, tree string, o *builder.Options) { o.Meta.Name = ".x" }, "starts with '.'"},
		{"bad version", func(t *testing.T, tree string, o *builder.Options) { o.Meta.Version = "1 0" }, "extension version"},
		{"no version", func(t *testing.T, tree string, o *builder.Options) { o.Meta.Version = "" }, "--version"},
		{"unknown arch", func(t *testing.T, tree string, o *builder.Options) { o.Meta.Arch = "sparc" }, "unknown architecture"},
		{"OS without version", func(t *testing.T, tree string, o *builder.Options) { o.Meta.ID = "fedora" }, "--sysext-level or --version-id"},
		{"bad ID", func(t *testing.T, tree string, o *builder.Options) {
			o.Meta.ID = "Fedora Linux"
			o.Meta.VersionID = "39"
		}, "ID="},
		{"bad format", func(t *testing.T, tree string, o *builder.Options) { o.Format = "ext4" }, "use squashfs, erofs or ddi"},
		{"bad compression", func(t *testing.T, tree string, o *builder.Options) { o.Compression = "brotli" }, "--compression brotli"},
		{"erofs has no brotli", func(t *testing.T, tree string, o *builder.Options) {
			o.Format = builder.EROFS
			o.Compression = "brotli"
		}, "erofs images take lz4, lz4hc, lzma, deflate, zstd, none"},
		{"erofs lzma level", func(t *testing.T, tree string, o *builder.Options) {
			o.Format = builder.EROFS
			o.Compression = "lzma:10"
		}, "--compression lzma:10: the level must be"},
		{"erofs lz4hc level", func(t *testing.T, tree string, o *builder.Options) {
			o.Format = builder.EROFS
			o.Compression = "lz4hc:13"
		}, "--compression lz4hc:13: the level must be"},
		{"erofs deflate level", func(t *testing.T, tree string, o *builder.Options) {
			o.Format = builder.EROFS
			o.Compression = "deflate:10"
		}, "--compression deflate:10: the level must be"},
		{"bad level", func(t *testing.T, tree string, o *builder.Options) { o.Compression = "zstd:x" }, "level"},
		{"output inside the tree", func(t *testing.T, tree string, o *builder.Options) {
			o.Output = filepath.Join(tree, "usr") + "/"
		}, "is inside the tree"},
		{"output directory missing", func(t *testing.T, tree string, o *builder.Options) {
			o.Output = filepath.Join(o.Output, "missing") + "/"
		}, "does not exist"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tree := writeTree(t, t.TempDir())
			out := testenv.TempDirNoLeak(t, ".#")
			o := opts(tree, out, builder.Squashfs)
			tt.setup(t, tree, &o)
			_, err := builder.Build(context.Background(), o)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Build = %v, want an error containing %q", err, tt.want)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error spans several lines: %q", err)
			}
			if got := listDir(t, out); len(got) != 0 {
				t.Fatalf("a refused build left %v in the output directory", got)
			}
		})
	}
}

func TestBuildRefusesExistingOutput(t *testing.T) {
	testenv.RequireTool(t, "mksquashfs")
	tree := writeTree(t, t.TempDir())
	out := testenv.TempDirNoLeak(t, ".#")
	target := filepath.Join(out, "custom.raw")
	if err := os.WriteFile(target, []byte("precious"), 0o644); err != nil {
		t.Fatal(err)
	}
	o := opts(tree, target, builder.Squashfs)
	if _, err := builder.Build(context.Background(), o); err == nil || !strings.Contains(err.Error(), "already exists: use --force") {
		t.Fatalf("Build over an existing file = %v", err)
	}
	if data, _ := os.ReadFile(target); string(data) != "precious" {
		t.Fatal("the existing file was changed")
	}
	if got := listDir(t, out); len(got) != 1 {
		t.Fatalf("output dir holds %v", got)
	}
	o.Force = true
	res, err := builder.Build(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	if res.Path != target {
		t.Fatalf("wrote %s, want %s", res.Path, target)
	}
	if _, err := fsimage.OpenMetadata(context.Background(), target); err != nil {
		t.Fatalf("--force did not write an image: %v", err)
	}
}

func TestBuildWarnsAboutSbin(t *testing.T) {
	testenv.RequireTool(t, "mksquashfs")
	tree := writeTree(t, t.TempDir())
	os.MkdirAll(filepath.Join(tree, "usr/sbin"), 0o755)
	os.WriteFile(filepath.Join(tree, "usr/sbin/tool"), []byte("#!/bin/sh\n"), 0o755)
	res, err := builder.Build(context.Background(), opts(tree, t.TempDir(), builder.Squashfs))
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Warnings) != 1 || !strings.Contains(res.Warnings[0], "usr/sbin") {
		t.Fatalf("warnings = %q, want one about usr/sbin", res.Warnings)
	}
	if w, err := builder.CheckTree(writeTree(t, t.TempDir())); err != nil || len(w) != 0 {
		t.Fatalf("CheckTree of a clean tree = %q, %v", w, err)
	}
}

func TestBuildMissingTool(t *testing.T) {
	tree := writeTree(t, t.TempDir())
	out := testenv.TempDirNoLeak(t, ".#")
	t.Setenv("PATH", t.TempDir())
	for f, pkg := range map[builder.ImageFormat]string{builder.Squashfs: "squashfs-tools", builder.EROFS: "erofs-utils"} {
		_, err := builder.Build(context.Background(), opts(tree, out, f))
		if err == nil || !strings.Contains(err.Error(), "apt-get install "+pkg) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s without its tool: %v, want a one-line error naming %s", f, err, pkg)
		}
	}
	if got := listDir(t, out); len(got) != 0 {
		t.Fatalf("left %v", got)
	}
}

// TestBuildCancel cancels while the tool runs (a fake mksquashfs or
// mkfs.erofs that reports it started through a fifo, then waits to be
// stopped): the error is the cancellation and the work directory (the
// image being written, EROFS's staged tree) does not survive.
func TestBuildCancel(t *testing.T) {
	for _, tc := range []struct {
		format builder.ImageFormat
		tool   string
	}{{builder.Squashfs, "mksquashfs"}, {builder.EROFS, "mkfs.erofs"}} {
		t.Run(string(tc.format), func(t *testing.T) {
			fake := t.TempDir()
			fifo := filepath.Join(t.TempDir(), "started")
			if err := syscall.Mkfifo(fifo, 0o600); err != nil {
				t.Fatal(err)
			}
			script := "#!/bin/sh\necho started > " + fifo + "\nexec sleep 600\n"
			if err := os.WriteFile(filepath.Join(fake, tc.tool), []byte(script), 0o755); err != nil {
				t.Fatal(err)
			}
			t.Setenv("PATH", fake+":"+os.Getenv("PATH"))
			tree := writeTree(t, t.TempDir())
			out := testenv.TempDirNoLeak(t, ".#")
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := make(chan error, 1)
			go func() {
				_, err := builder.Build(ctx, opts(tree, out, tc.format))
				done <- err
			}()
			// Opening the fifo blocks until the fake tool writes to it.
			data, err := os.ReadFile(fifo)
			if err != nil || !strings.Contains(string(data), "started") {
				t.Fatalf("fake tool did not start: %q %v", data, err)
			}
			if got, err := os.ReadDir(out); err != nil || len(got) != 1 || !got[0].IsDir() {
				t.Fatalf("while the tool runs the output dir holds %v (%v), want the work directory", got, err)
			}
			cancel()
			err = <-done
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("Build after cancel = %v, want context.Canceled", err)
			}
			if got := listDir(t, out); len(got) != 0 {
				t.Fatalf("a cancelled build left %v", got)
			}
			// Cancelled before it starts: nothing either.
			if _, err := builder.Build(ctx, opts(tree, out, tc.format)); !errors.Is(err, context.Canceled) {
				t.Fatalf("Build with a cancelled context = %v", err)
			}
			if got := listDir(t, out); len(got) != 0 {
				t.Fatalf("left %v", got)
			}
		})
	}
}

// TestBuildToolFailure: a tool that fails after writing part of the image
// leaves nothing, and its message is in the error.
func TestBuildToolFailure(t *testing.T) {
	fake := t.TempDir()
	script := "#!/bin/sh\n# mkfs.erofs-like: output is the next-to-last argument\nfor a; do last2=$last; last=$a; done\necho partial > \"$last2\"\necho 'mkfs.erofs: disk full' >&2\nexit 1\n"
	if err := os.WriteFile(filepath.Join(fake, "mkfs.erofs"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", fake+":"+os.Getenv("PATH"))
	out := testenv.TempDirNoLeak(t, ".#")
	_, err := builder.Build(context.Background(), opts(writeTree(t, t.TempDir()), out, builder.EROFS))
	if err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Fatalf("Build with a failing tool = %v", err)
	}
	if got := listDir(t, out); len(got) != 0 {
		t.Fatalf("a failed build left %v", got)
	}
}

// TestMergeBothFormats is the real thing: the host's systemd-sysext merges
// each image in a private mount namespace and the program runs from the
// merged /usr.
func TestMergeBothFormats(t *testing.T) {
	testenv.RequireRoot(t)
	for _, f := range formats {
		t.Run(string(f), func(t *testing.T) {
			requireTool(t, f)
			o := opts(writeTree(t, t.TempDir()), t.TempDir(), f)
			o.Meta.Arch = extension.HostArch()
			res, err := builder.Build(context.Background(), o)
			if err != nil {
				t.Fatal(err)
			}
			// systemd wants the file named after extension-release.NAME.
			link := filepath.Join(t.TempDir(), "sysext-test-hello.raw")
			if err := os.Link(res.Path, link); err != nil {
				t.Fatal(err)
			}
			out, err := testenv.MergeAndRun(t, []string{link},
				"sysext-test-hello",
				"cat /usr/lib/extension-release.d/extension-release.sysext-test-hello",
				"systemd-sysext status")
			if err != nil {
				t.Fatalf("merge: %v\n%s", err, out)
			}
			if !strings.Contains(out, helloVersion) || !strings.Contains(out, "SYSEXT_VERSION_ID=7.7") {
				t.Fatalf("the program did not run from the merged /usr:\n%s", out)
			}
		})
	}
}

// TestWrongIDRefused: an image for another OS is refused by systemd-sysext,
// and extension.Compatible predicts it.
func TestWrongIDRefused(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireTool(t, "mksquashfs")
	host, err := os.ReadFile("/etc/os-release")
	if err != nil {
		t.Skip("no /etc/os-release")
	}
	hostRel, err := extension.ParseRelease(host)
	if err != nil {
		t.Fatal(err)
	}
	o := opts(writeTree(t, t.TempDir()), t.TempDir(), builder.Squashfs)
	o.Meta.Arch = extension.HostArch()
	o.Meta.ID = "notthisos"
	o.Meta.VersionID = "1"
	res, err := builder.Build(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	var ie *extension.IncompatibleError
	if err := extension.Compatible(res.Release, extension.Host{OSRelease: hostRel}); !errors.As(err, &ie) || ie.Field != extension.FieldID {
		t.Fatalf("Compatible = %v, want a refusal on ID", err)
	}
	// The control: the same tree with ID=_any merges (see
	// TestMergeBothFormats); this one must not.
	link := filepath.Join(t.TempDir(), "sysext-test-hello.raw")
	if err := os.Link(res.Path, link); err != nil {
		t.Fatal(err)
	}
	out, _ := testenv.MergeAndRun(t, []string{link},
		"test -e /usr/lib/extension-release.d/extension-release.sysext-test-hello && echo MERGED || echo NOT-MERGED")
	// systemd 252 says "... ignored due to incompatible version".
	if !strings.Contains(out, "NOT-MERGED") || !strings.Contains(out, "incompatible") || strings.Contains(out, helloVersion) {
		t.Fatalf("systemd-sysext merged an image for another OS:\n%s", out)
	}
	t.Logf("systemd-sysext said:\n%s", out)
}

var time0 = mustTime("2020-01-01T00:00:00Z")

// TestBuildAcrossFilesystems: with the output on another filesystem than
// the tree, EROFS staging cannot link and copies instead (content, modes,
// symlinks), says so in a warning, and the image is the same bytes as one
// built with links.
func TestBuildAcrossFilesystems(t *testing.T) {
	testenv.RequireTool(t, "mkfs.erofs")
	defer builder.UseOverlay(false)() // staging is what this test is about
	other, err := os.MkdirTemp("/dev/shm", "sysext-test-")
	if err != nil {
		t.Skipf("no /dev/shm: %v", err)
	}
	defer os.RemoveAll(other)
	var st1, st2 syscall.Statfs_t
	tree := writeTree(t, t.TempDir())
	if syscall.Statfs(other, &st1) != nil || syscall.Statfs(tree, &st2) != nil || st1.Type == st2.Type {
		t.Skip("/dev/shm is on the same kind of filesystem as the temp dir")
	}
	o := opts(tree, other+"/", builder.EROFS)
	o.Digest = true
	res, err := builder.Build(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Warnings) != 1 || !strings.Contains(res.Warnings[0], "copied rather than linked") {
		t.Fatalf("warnings = %q", res.Warnings)
	}
	o.Output = t.TempDir()
	linked, err := builder.Build(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	if res.Digest != linked.Digest {
		t.Fatalf("copied staging gives %s, linked staging %s", res.Digest, linked.Digest)
	}
	if got := listDir(t, other); len(got) != 1 {
		t.Fatalf("output dir holds %v", got)
	}

	// StageDir on the tree's filesystem: linked again, the same image,
	// and nothing left in StageDir.
	stageDir := t.TempDir()
	o.Output, o.StageDir, o.Force = other+"/", stageDir, true
	staged, err := builder.Build(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	if len(staged.Warnings) != 0 || staged.Digest != linked.Digest {
		t.Fatalf("with StageDir: warnings %q, digest %s, want none and %s", staged.Warnings, staged.Digest, linked.Digest)
	}
	if got := listDir(t, stageDir); len(got) != 0 {
		t.Fatalf("StageDir holds %v after the build", got)
	}
}

// TestBuildKeepsReleaseBytes: a tree's own extension-release with quotes,
// backslashes, a percent sign and UTF-8 reaches both formats byte for
// byte (squashfs adds it through a printf pseudo definition).
func TestBuildKeepsReleaseBytes(t *testing.T) {
	for _, f := range []builder.ImageFormat{builder.Squashfs, builder.EROFS} {
		t.Run(string(f), func(t *testing.T) {
			testenv.RequireTool(t, map[builder.ImageFormat]string{builder.Squashfs: "mksquashfs", builder.EROFS: "mkfs.erofs"}[f])
			tree := writeTree(t, t.TempDir())
			relPath := filepath.Join(tree, "usr/lib/extension-release.d/extension-release.sysext-test-hello")
			os.MkdirAll(filepath.Dir(relPath), 0o755)
			if err := os.WriteFile(relPath, []byte("ID=_any\nPRETTY_NAME=\"it's 100% \\\"tricky\\\" \\\\ — ünï\"\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			res, err := builder.Build(context.Background(), opts(tree, t.TempDir(), f))
			if err != nil {
				t.Fatal(err)
			}
			got, err := fsimage.ReadFile(context.Background(), res.Path, extension.ReleasePath("sysext-test-hello"), extension.MaxReleaseSize)
			if err != nil {
				t.Fatal(err)
			}
			if want := res.Release.Format(); string(got) != string(want) {
				t.Fatalf("image carries\n%q\nwant\n%q", got, want)
			}
			if v := res.Release.Get("PRETTY_NAME"); v != `it's 100% "tricky" \ — ünï` {
				t.Fatalf("PRETTY_NAME = %q", v)
			}
		})
	}
}

// TestEROFSOverlayMatchesStaging: an EROFS image built on the overlay view
// (our files over the tree in a private mount namespace) has the same
// bytes as one built from a staged tree, for a tree with its own release
// file, a directory on our files' path with an unusual mode, and a hard
// link pair; and the overlay path leaves nothing behind.
func TestEROFSOverlayMatchesStaging(t *testing.T) {
	testenv.RequireTool(t, "mkfs.erofs")
	testenv.RequireTool(t, "unshare")
	// The tree on tmpfs, the output on the disk: staging would have to
	// copy and say so, so a build without that warning used the overlay.
	shm, err := os.MkdirTemp("/dev/shm", "sysext-test-")
	if err != nil {
		t.Skipf("no /dev/shm: %v", err)
	}
	defer os.RemoveAll(shm)
	var st1, st2 syscall.Statfs_t
	if syscall.Statfs(shm, &st1) != nil || syscall.Statfs(t.TempDir(), &st2) != nil || st1.Type == st2.Type {
		t.Skip("/dev/shm is on the same kind of filesystem as the temp dir")
	}
	tree := writeTree(t, shm)
	rel := filepath.Join(tree, "usr/lib/extension-release.d/extension-release.sysext-test-hello")
	os.MkdirAll(filepath.Dir(rel), 0o755)
	os.WriteFile(rel, []byte("ID=_any\nPRETTY_NAME=\"mine\"\n"), 0o644)
	if err := os.Chmod(filepath.Join(tree, "usr/lib"), 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(filepath.Join(tree, "usr/bin/sysext-test-hello"), filepath.Join(tree, "usr/bin/hello-again")); err != nil {
		t.Fatal(err)
	}
	o := opts(tree, "", builder.EROFS)
	o.Enable = []string{"sysext-test-hello.service"}
	o.Digest = true
	staged := func(r *builder.Result) bool {
		return len(r.Warnings) == 1 && strings.Contains(r.Warnings[0], "copied rather than linked")
	}

	o.Output = testenv.TempDirNoLeak(t, ".#")
	viaOverlay, err := builder.Build(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	if staged(viaOverlay) {
		if os.Getenv("CI") != "" {
			t.Fatal("the build did not use the overlay view")
		}
		t.Skip("no overlay here (user namespaces or overlayfs unavailable); the build staged")
	}
	if len(viaOverlay.Warnings) != 0 {
		t.Fatalf("warnings %q", viaOverlay.Warnings)
	}
	if got := listDir(t, o.Output); len(got) != 1 {
		t.Fatalf("output dir holds %v", got)
	}

	// Where the view cannot be set up (an unshare that fails, as with
	// user namespaces disabled), the build stages and gives the same bytes.
	fake := t.TempDir()
	os.WriteFile(filepath.Join(fake, "unshare"), []byte("#!/bin/sh\necho 'unshare: unshare failed: Operation not permitted' >&2\nexit 1\n"), 0o755)
	t.Setenv("PATH", fake+":"+os.Getenv("PATH"))
	o.Output = testenv.TempDirNoLeak(t, ".#")
	fallback, err := builder.Build(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	if !staged(fallback) || fallback.Digest != viaOverlay.Digest {
		t.Fatalf("with a failing unshare: warnings %q, digest %s, want staging and %s", fallback.Warnings, fallback.Digest, viaOverlay.Digest)
	}
	if got := listDir(t, o.Output); len(got) != 1 {
		t.Fatalf("output dir holds %v", got)
	}

	defer builder.UseOverlay(false)()
	o.Output = t.TempDir()
	viaStaging, err := builder.Build(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	if viaOverlay.Digest != viaStaging.Digest {
		t.Fatalf("overlay gives %s, staging %s", viaOverlay.Digest, viaStaging.Digest)
	}
}
