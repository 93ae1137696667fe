package flix

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/content/memory"

	"github.com/sysext/sysext/internal/tartest"
	"github.com/sysext/sysext/oci/ocitest"
)

// ent is one tar entry of a test layer.
type ent = tartest.Entry

var (
	file     = tartest.File
	dir      = tartest.Dir
	symlink  = tartest.Symlink
	hardlink = tartest.Hardlink
)

func whiteout(dir, victim string) ent { return file(filepath.Join(dir, ".wh."+victim), "") }
func opaque(dir string) ent           { return file(filepath.Join(dir, ".wh..wh..opq"), "") }
func withMode(e ent, m int64) ent     { e.Mode = m; return e }
func withUID(e ent, uid int) ent      { e.UID = uid; return e }

func gzipped(t testing.TB, b []byte) []byte {
	var out bytes.Buffer
	z := gzip.NewWriter(&out)
	z.Write(b)
	if err := z.Close(); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

func zstded(t testing.TB, b []byte) []byte {
	var out bytes.Buffer
	z, err := zstd.NewWriter(&out)
	if err != nil {
		t.Fatal(err)
	}
	z.Write(b)
	if err := z.Close(); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

// testLayer is a layer's stored bytes and its uncompressed tar.
type testLayer struct {
	blob, tar []byte
	mediaType string
}

func plainLayer(b []byte) testLayer { return testLayer{b, b, ocispec.MediaTypeImageLayer} }
func gzipLayer(t testing.TB, b []byte) testLayer {
	return testLayer{gzipped(t, b), b, ocispec.MediaTypeImageLayerGzip}
}
func zstdLayer(t testing.TB, b []byte) testLayer {
	return testLayer{zstded(t, b), b, ocispec.MediaTypeImageLayerZstd}
}

// pushImage stores a single-platform image in s and returns its manifest
// descriptor; with index set, an index of it and an s390x variant.
func pushImage(t testing.TB, s content.Pusher, cfg ocispec.Image, index bool, layers ...testLayer) ocispec.Descriptor {
	t.Helper()
	ctx := context.Background()
	push := func(mt string, b []byte) ocispec.Descriptor {
		d := content.NewDescriptorFromBytes(mt, b)
		if err := s.Push(ctx, d, bytes.NewReader(b)); err != nil && !strings.Contains(err.Error(), "already exists") {
			t.Fatal(err)
		}
		return d
	}
	manifest := func(cfg ocispec.Image) ocispec.Descriptor {
		cfg.RootFS = ocispec.RootFS{Type: "layers"}
		m := ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest}
		for _, l := range layers {
			m.Layers = append(m.Layers, push(l.mediaType, l.blob))
			cfg.RootFS.DiffIDs = append(cfg.RootFS.DiffIDs, digest.FromBytes(l.tar))
		}
		cb, _ := json.Marshal(cfg)
		m.Config = push(ocispec.MediaTypeImageConfig, cb)
		mb, _ := json.Marshal(m)
		d := push(ocispec.MediaTypeImageManifest, mb)
		d.Platform = &ocispec.Platform{OS: cfg.OS, Architecture: cfg.Architecture}
		return d
	}
	if cfg.Architecture == "" {
		cfg.Architecture, cfg.OS = "amd64", "linux"
	}
	md := manifest(cfg)
	if !index {
		md.Platform = nil
		return md
	}
	cfg.Architecture = "s390x"
	other := manifest(cfg)
	idx := ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageIndex, Manifests: []ocispec.Descriptor{other, md}}
	ib, _ := json.Marshal(idx)
	return push(ocispec.MediaTypeImageIndex, ib)
}

// listTree describes every path under dir, sorted: "path type mode [target|content]".
func listTree(t testing.TB, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if rel == "." {
			return nil
		}
		s := fmt.Sprintf("%s %o", rel, fi.Mode().Perm()|fi.Mode()&(os.ModeSetuid|os.ModeSetgid|os.ModeSticky))
		switch {
		case fi.Mode()&os.ModeSymlink != 0:
			l, _ := os.Readlink(p)
			s += " -> " + l
		case fi.IsDir():
			s += " dir"
		case fi.Mode().IsRegular():
			b, _ := os.ReadFile(p)
			s += " " + string(b)
		default:
			s += " " + fi.Mode().Type().String()
		}
		out = append(out, s)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(out)
	return out
}

func sameTree(t testing.TB, got, want []string) {
	t.Helper()
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("tree:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// multiLayer is an image whose layers use every compression and every
// kind of entry and whiteout.
func multiLayer(t testing.TB) []testLayer {
	l1 := tartest.Tar(t,
		dir("./"), dir("etc"), file("etc/os-release", "ID=test\n"), dir("usr"), dir("usr/bin"),
		withMode(file("usr/bin/tool", "v1"), 0o4755), symlink("bin", "usr/bin"),
		dir("var"), dir("var/cache"), file("var/cache/a", "a"), file("var/cache/b", "b"),
		dir("opt"), file("opt/gone", "x"), dir("opt/dir"), file("opt/dir/inner", "i"),
		file("usr/bin/orig", "o"), hardlink("usr/bin/alias", "usr/bin/orig"))
	l2 := tartest.Tar(t,
		opaque("var/cache"), file("var/cache/c", "c"),
		whiteout("opt", "gone"), whiteout("opt", "dir"),
		file("usr/bin/tool", "v2"), withMode(dir("usr/share"), 0o700), file("usr/share/doc", "d"))
	l3 := tartest.Tar(t,
		whiteout("usr/bin", "alias"), file("bin/via-link", "through the symlink"),
		symlink("etc/abs", "/usr/share/doc"), file("etc/os-release", "ID=test\nVERSION_ID=3\n"))
	return []testLayer{gzipLayer(t, l1), zstdLayer(t, l2), plainLayer(l3)}
}

var multiLayerTree = []string{
	"bin 777 -> usr/bin",
	"etc 755 dir",
	"etc/abs 777 -> /usr/share/doc",
	"etc/os-release 644 ID=test\nVERSION_ID=3\n",
	"opt 755 dir",
	"usr 755 dir",
	"usr/bin 755 dir",
	"usr/bin/orig 644 o",
	"usr/bin/tool 644 v2",
	"usr/bin/via-link 644 through the symlink",
	"usr/share 700 dir",
	"usr/share/doc 644 d",
	"var 755 dir",
	"var/cache 755 dir",
	"var/cache/c 644 c",
}

func TestRootfsMultiLayer(t *testing.T) {
	for _, index := range []bool{false, true} {
		t.Run(fmt.Sprintf("index=%v", index), func(t *testing.T) {
			s := memory.New()
			desc := pushImage(t, s, ocispec.Image{Config: ocispec.ImageConfig{Env: []string{"A=1"}, Entrypoint: []string{"/usr/bin/tool"}}}, index, multiLayer(t)...)
			base := t.TempDir()
			dir := filepath.Join(base, "rootfs")
			res, err := Rootfs(context.Background(), s, desc, dir, RootfsOptions{Arch: "x86-64"})
			if err != nil {
				t.Fatal(err)
			}
			sameTree(t, listTree(t, dir), multiLayerTree)
			cfg, err := ReadConfig(dir)
			if err != nil || cfg == nil || cfg.Config.Entrypoint[0] != "/usr/bin/tool" || cfg.Config.Env[0] != "A=1" {
				t.Fatalf("config: %v %+v", err, cfg)
			}
			if res.ConfigFile != dir+ConfigSuffix {
				t.Fatalf("config file %s", res.ConfigFile)
			}
			ents, _ := os.ReadDir(base)
			if len(ents) != 2 {
				t.Fatalf("left in %s: %v", base, ents)
			}
		})
	}
}

func TestRootfsPlatform(t *testing.T) {
	s := memory.New()
	desc := pushImage(t, s, ocispec.Image{}, true, plainLayer(tartest.Tar(t, file("a", "a"))))
	_, err := Rootfs(context.Background(), s, desc, filepath.Join(t.TempDir(), "r"), RootfsOptions{Arch: "arm64"})
	if err == nil || !strings.Contains(err.Error(), "no build for linux/arm64") || !strings.Contains(err.Error(), "linux/amd64") {
		t.Fatalf("err = %v", err)
	}
	single := pushImage(t, s, ocispec.Image{}, false, plainLayer(tartest.Tar(t, file("a", "a"))))
	_, err = Rootfs(context.Background(), s, single, filepath.Join(t.TempDir(), "r"), RootfsOptions{Arch: "arm64"})
	if err == nil || !strings.Contains(err.Error(), "--platform") {
		t.Fatalf("err = %v", err)
	}
}

func TestRootfsTargetNotEmpty(t *testing.T) {
	s := memory.New()
	desc := pushImage(t, s, ocispec.Image{}, false, plainLayer(tartest.Tar(t, file("a", "a"))))
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "x"), nil, 0o644)
	_, err := Rootfs(context.Background(), s, desc, dir, RootfsOptions{})
	if err == nil || !strings.Contains(err.Error(), "not empty") {
		t.Fatalf("err = %v", err)
	}
	empty := t.TempDir()
	if _, err := Rootfs(context.Background(), s, desc, empty, RootfsOptions{}); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(empty, "a")); string(b) != "a" {
		t.Fatalf("a = %q", b)
	}
}

func TestRootfsDigestMismatchRefused(t *testing.T) {
	s := memory.New()
	layers := multiLayer(t)
	desc := pushImage(t, s, ocispec.Image{}, false, layers...)
	base := t.TempDir()
	dir := filepath.Join(base, "rootfs")
	for i, l := range layers {
		victim := digest.FromBytes(l.blob)
		_, err := Rootfs(context.Background(), ocitest.CorruptFetcher{Fetcher: s, Victim: victim}, desc, dir, RootfsOptions{})
		if err == nil || !strings.Contains(err.Error(), "refused") {
			t.Fatalf("layer %d: err = %v", i, err)
		}
		if ents, _ := os.ReadDir(base); len(ents) != 0 {
			t.Fatalf("layer %d: left behind: %v", i, ents)
		}
	}
}

// TestMaliciousLayers: every crafted tar is refused, or (a planted
// absolute symlink) followed inside the root only; nothing is ever written
// outside, and Rootfs leaves nothing behind.
func TestMaliciousLayers(t *testing.T) {
	cases := []struct {
		name   string
		layers [][]ent
		errHas string // "" = accepted, but must stay inside
	}{
		{"dotdot", [][]ent{{file("../outside", "x")}}, "climbs above the root"},
		{"dotdot-deep", [][]ent{{dir("a"), file("a/../../outside", "x")}}, "climbs above the root"},
		{"absolute", [][]ent{{file("/outside", "x")}}, "absolute path"},
		{"symlink-dotdot-same-layer", [][]ent{{symlink("l", "../.."), file("l/outside", "x")}}, "above the root"},
		{"symlink-dotdot-earlier-layer", [][]ent{{symlink("l", "../../../.."), dir("d")}, {file("l/outside", "x")}}, "above the root"},
		{"symlink-relative-chain", [][]ent{{dir("a"), symlink("a/up", ".."), symlink("b", "a/up/a/up/..")}, {file("b/outside", "x")}}, "above the root"},
		{"symlink-absolute-stays-inside", [][]ent{{symlink("l", "OUTSIDE")}, {file("l/outside", "x")}}, ""},
		{"hardlink-dotdot", [][]ent{{hardlink("h", "../outside-target")}}, "climbs above the root"},
		{"hardlink-absolute", [][]ent{{hardlink("h", "/etc/passwd")}}, "absolute path"},
		{"hardlink-through-symlink", [][]ent{{symlink("l", "../.."), hardlink("h", "l/outside-target")}}, "above the root"},
		// Issue 19's recipe leak, as a layer: an absolute symlink to the
		// directory holding the secret, and a hard link through it.
		{"hardlink-through-absolute-symlink", [][]ent{{dir("pkg"), symlink("pkg/evil", "OUTSIDE"), hardlink("pkg/leak", "pkg/evil/outside-target")}}, "hard link target"},
		{"hardlink-through-absolute-symlink-later-layer", [][]ent{{dir("pkg"), symlink("pkg/evil", "OUTSIDE")}, {hardlink("pkg/leak", "pkg/evil/outside-target")}}, "hard link target"},
		{"whiteout-dotdot", [][]ent{{file("a/.wh..", "")}}, "whiteout"},
		{"whiteout-through-symlink", [][]ent{{symlink("l", "../..")}, {file("l/.wh.outside-target", "")}}, "above the root"},
		{"symlink-loop", [][]ent{{symlink("a", "b"), symlink("b", "a"), file("a/x", "x")}}, "too many levels"},
		{"file-as-dir", [][]ent{{file("f", "x"), file("f/x", "y")}}, "not a directory"},
		{"replace-symlink-not-follow", [][]ent{{symlink("f", "OUTSIDE/outside-target")}, {file("f", "inside")}}, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			sandbox := t.TempDir()
			outside := filepath.Join(sandbox, "outside")
			target := filepath.Join(sandbox, "outside-target")
			os.WriteFile(target, []byte("keep"), 0o644)
			base := filepath.Join(sandbox, "a", "b", "c")
			os.MkdirAll(base, 0o755)
			dir := filepath.Join(base, "rootfs")
			s := memory.New()
			var layers []testLayer
			for _, l := range c.layers {
				for i := range l {
					l[i].Link = strings.ReplaceAll(l[i].Link, "OUTSIDE", sandbox)
				}
				layers = append(layers, gzipLayer(t, tartest.Tar(t, l...)))
			}
			desc := pushImage(t, s, ocispec.Image{}, false, layers...)
			_, err := Rootfs(context.Background(), s, desc, dir, RootfsOptions{})
			if c.errHas != "" {
				if err == nil || !strings.Contains(err.Error(), c.errHas) {
					t.Fatalf("err = %v, want %q", err, c.errHas)
				}
				if ents, _ := os.ReadDir(base); len(ents) != 0 {
					t.Fatalf("left behind: %v", ents)
				}
			} else if err != nil {
				t.Fatal(err)
			}
			if _, err := os.Lstat(outside); err == nil {
				t.Fatal("wrote outside the root")
			}
			if b, _ := os.ReadFile(target); string(b) != "keep" {
				t.Fatalf("outside file changed: %q", b)
			}
			if fi, err := os.Stat(target); err != nil || fi.Sys().(*syscall.Stat_t).Nlink != 1 {
				t.Fatalf("the outside file was linked into the tree: %v", err)
			}
		})
	}
}

// TestRootfsDirModeIsOurs: a "./" entry with mode 07777 and another owner
// does not make the output directory drwsrwsrwt (issue 19, point 13).
func TestRootfsDirModeIsOurs(t *testing.T) {
	s := memory.New()
	root := withUID(withMode(dir("./"), 0o7777), 1234)
	desc := pushImage(t, s, ocispec.Image{}, false, gzipLayer(t, tartest.Tar(t, root, file("f", "x"))))
	dir := filepath.Join(t.TempDir(), "rootfs")
	if _, err := Rootfs(context.Background(), s, desc, dir, RootfsOptions{}); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode() != os.ModeDir|0o755 || fi.Sys().(*syscall.Stat_t).Uid != uint32(os.Geteuid()) {
		t.Fatalf("the rootfs directory is %v, owner %d", fi.Mode(), fi.Sys().(*syscall.Stat_t).Uid)
	}
}

// TestRootfsSparseLayer: a 200-byte layer holding a 200 MiB sparse file
// stays sparse on disk, and with --max-size below 200 MiB it is refused
// with a one-line error and nothing left behind (issue 19, point 6).
func TestRootfsSparseLayer(t *testing.T) {
	s := memory.New()
	const size = 200 << 20
	layer := gzipLayer(t, tartest.Sparse("big", size))
	if len(layer.blob) > 512 {
		t.Fatalf("the crafted layer is %d bytes", len(layer.blob))
	}
	desc := pushImage(t, s, ocispec.Image{}, false, layer)

	base := t.TempDir()
	dir := filepath.Join(base, "rootfs")
	if _, err := Rootfs(context.Background(), s, desc, dir, RootfsOptions{}); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, "big"))
	if err != nil {
		t.Fatal(err)
	}
	if st := fi.Sys().(*syscall.Stat_t); fi.Size() != size || st.Blocks*512 > 1<<20 {
		t.Fatalf("size %d, %d bytes allocated", fi.Size(), st.Blocks*512)
	}

	base = t.TempDir()
	dir = filepath.Join(base, "rootfs")
	_, err = Rootfs(context.Background(), s, desc, dir, RootfsOptions{MaxSize: 100 << 20})
	if err == nil || !strings.Contains(err.Error(), "larger than --max-size 100.0 MiB") || strings.Contains(err.Error(), "\n") {
		t.Fatalf("err = %v", err)
	}
	if ents, _ := os.ReadDir(base); len(ents) != 0 {
		t.Fatalf("left behind: %v", ents)
	}
}
