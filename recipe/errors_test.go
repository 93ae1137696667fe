package recipe

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/sysext/sysext/internal/tartest"
	"github.com/sysext/sysext/internal/testenv"
)

// A minimal valid recipe; tests break one thing at a time.
const goodRecipe = `name: hello
description: a test recipe
upstream: https://example.org/hello
version:
  pattern: '[0-9]+\.[0-9]+'
  example: "1.0"
arches:
  x86-64: {}
downloads:
  - id: hello
    url: https://example.org/hello/${version}/hello-${goarch}.tar.gz
    checksum:
      url: ${url}.sha256
files:
  - {from: "hello-${version}/hello", to: /usr/bin/}
units:
  - name: hello.service
    enable: true
    content: |
      [Service]
      ExecStart=/usr/bin/hello
`

func mustParse(t *testing.T, src string) *Recipe {
	t.Helper()
	r, err := Parse([]byte(src), "hello.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestParseErrorsNameTheLine(t *testing.T) {
	for _, tc := range []struct {
		name, replace, with string
		line                int
		want                string
	}{
		{"syntax", "  - id: hello\n", "  - id: [hello\n", 10, "hello.yaml:10:"},
		{"unknown field", "    enable: true\n", "    enabled: true\n", 18, "field enabled not found"},
		{"leaves usr", "to: /usr/bin/}", "to: /etc/hello}", 15, "leaves /usr"},
		{"climbs out of usr", "to: /usr/bin/}", "to: /usr/../etc/}", 15, "leaves /usr"},
		{"sbin", "to: /usr/bin/}", "to: /usr/sbin/}", 15, "/usr/sbin"},
		{"archive path climbs", `from: "hello-${version}/hello"`, "from: ../../etc/passwd", 15, "stay inside the archive"},
		{"unknown variable", "hello-${goarch}.tar.gz", "hello-${cpu}.tar.gz", 11, "${cpu}"},
		{"bad arch", "  x86-64: {}\n", "  amd64: {}\n", 8, "write x86-64"},
		{"bad pattern", `'[0-9]+\.[0-9]+'`, `'[0-9+'`, 5, "not a valid regexp"},
		{"example does not match", `example: "1.0"`, `example: "one"`, 6, "does not match"},
		{"bad unit name", "- name: hello.service", "- name: hello", 17, "not a unit name"},
		{"unknown download", `  - {from: "hello-${version}/hello", to: /usr/bin/}`, "  - {download: nope, from: x, to: /usr/bin/}", 15, `no download has id "nope"`},
		{"bad when", `  - {from: "hello-${version}/hello", to: /usr/bin/}`, `  - {from: "hello-${version}/hello", to: /usr/bin/, when: flavour == big}`, 15, `no option "flavour"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := strings.Replace(goodRecipe, tc.replace, tc.with, 1)
			if src == goodRecipe {
				t.Fatalf("test case does not change the recipe")
			}
			_, err := Parse([]byte(src), "hello.yaml")
			var re *Error
			if !errors.As(err, &re) {
				t.Fatalf("got %v, want a recipe error", err)
			}
			if re.Line != tc.line || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %q (line %d), want line %d and %q", err, re.Line, tc.line, tc.want)
			}
		})
	}
}

func TestResolveErrors(t *testing.T) {
	r := mustParse(t, goodRecipe)
	_, err := r.Resolve(ResolveOptions{Version: "1.0", Arch: "arm64"})
	if !errors.Is(err, ErrArch) || !strings.Contains(err.Error(), "offers x86-64") {
		t.Errorf("arch not offered: %v", err)
	}
	_, err = r.Resolve(ResolveOptions{Version: "1.0-rc1", Arch: "x86-64"})
	if !errors.Is(err, ErrVersion) || !strings.Contains(err.Error(), `"1.0-rc1" does not match`) || !strings.Contains(err.Error(), "e.g. 1.0") {
		t.Errorf("bad version: %v", err)
	}
	_, err = r.Resolve(ResolveOptions{Version: "1.0", Arch: "x86-64", Options: map[string]string{"flavour": "big"}})
	if !errors.Is(err, ErrOption) || !strings.Contains(err.Error(), `unknown option "flavour"`) {
		t.Errorf("unknown option: %v", err)
	}
	k, err := Lookup("kubernetes")
	if err != nil {
		t.Fatal(err)
	}
	_, err = k.Resolve(ResolveOptions{Version: "v1.31.2", Arch: "x86-64", Options: map[string]string{"cni": "v1"}})
	if !errors.Is(err, ErrOption) || !strings.Contains(err.Error(), "use one of cni-version") {
		t.Errorf("unknown kubernetes option: %v", err)
	}
	_, err = k.Resolve(ResolveOptions{Version: "v1.31.2", Arch: "x86-64", Options: map[string]string{"cni-version": "../../x"}})
	if !errors.Is(err, ErrOption) {
		t.Errorf("option value with a path: %v", err)
	}
	_, err = k.Resolve(ResolveOptions{Version: "v1.31.2", Arch: "riscv64"})
	if !errors.Is(err, ErrArch) || !strings.Contains(err.Error(), "it offers arm64, x86-64") {
		t.Errorf("kubernetes on riscv64: %v", err)
	}
	d, _ := Lookup("docker")
	_, err = d.Resolve(ResolveOptions{Version: "27.3.1", Arch: "x86-64", Options: map[string]string{"without": "buildx"}})
	if !errors.Is(err, ErrOption) || !strings.Contains(err.Error(), "use one of containerd, docker") {
		t.Errorf("bad option value: %v", err)
	}
	if _, err := Load("no-such-recipe"); !errors.Is(err, ErrUnknown) || !strings.Contains(err.Error(), "sysext recipes list") {
		t.Errorf("unknown recipe: %v", err)
	}
}

// badBake bakes the hello recipe against u and checks that it failed with
// want, wrote no image and left no temp file in the output or the cache.
func badBake(t *testing.T, u *upstream, src string, pins map[string]string, want string) {
	t.Helper()
	badBakeCache(t, u, src, pins, want, true)
}

// badBakeCache is badBake; cacheEmpty false allows verified downloads to
// stay cached (the bake failed after checking them).
func badBakeCache(t *testing.T, u *upstream, src string, pins map[string]string, want string, cacheEmpty bool) {
	t.Helper()
	r := mustParse(t, src)
	out := testenv.TempDirNoLeak(t, ".#")
	cache := testenv.TempDirNoLeak(t, ".#")
	_, err := Bake(context.Background(), BakeOptions{
		Recipe:   r,
		Resolve:  ResolveOptions{Version: "1.0", Arch: "x86-64", SHA256: pins},
		Output:   out,
		CacheDir: cache,
		Mirror:   u.mirror(),
	})
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("got %v, want an error with %q", err, want)
	}
	if strings.Count(err.Error(), "\n") > 0 {
		t.Errorf("error spans lines: %q", err)
	}
	entries, _ := os.ReadDir(out)
	for _, e := range entries {
		t.Errorf("left %s in the output directory", e.Name())
	}
	blobs, _ := filepath.Glob(filepath.Join(cache, "blobs", "sha256", "*"))
	for _, b := range blobs {
		if !cacheEmpty {
			break
		}
		t.Errorf("cached unverified content %s", b)
	}
}

const helloURL = "https://example.org/hello/1.0/hello-amd64.tar.gz"

func helloTarball(t *testing.T) []byte {
	return tgz(t, exe("hello-1.0/hello", script("hello", "1.0")))
}

func TestBakeBadDownloads(t *testing.T) {
	testenv.RequireTool(t, "mksquashfs")
	data := helloTarball(t)
	t.Run("checksum mismatch", func(t *testing.T) {
		u := newUpstream(t)
		u.add(helloURL, data)
		u.add(helloURL+".sha256", []byte(sum([]byte("something else"))+"  hello-amd64.tar.gz\n"))
		badBake(t, u, goodRecipe, nil, "checksum mismatch")
	})
	t.Run("pinned checksum mismatch", func(t *testing.T) {
		u := newUpstream(t)
		u.add(helloURL, data)
		badBake(t, u, goodRecipe, map[string]string{"hello": sum([]byte("other"))}, "checksum mismatch")
	})
	t.Run("not found", func(t *testing.T) {
		u := newUpstream(t)
		u.add(helloURL+".sha256", []byte(sum(data)))
		badBake(t, u, goodRecipe, nil, "404 Not Found")
		if n := u.count(helloURL); n != 1 {
			t.Errorf("a 404 was tried %d times, want once", n)
		}
	})
	t.Run("server error", func(t *testing.T) {
		u := newUpstream(t)
		u.add(helloURL, data)
		u.add(helloURL+".sha256", []byte(sum(data)))
		u.fault(helloURL, "500")
		badBake(t, u, goodRecipe, nil, "500 Internal Server Error")
		if n := u.count(helloURL); n != 3 {
			t.Errorf("a 500 was tried %d times, want 3", n)
		}
	})
	t.Run("cut connection", func(t *testing.T) {
		u := newUpstream(t)
		u.add(helloURL, data)
		u.add(helloURL+".sha256", []byte(sum(data)))
		u.fault(helloURL, "cut")
		badBake(t, u, goodRecipe, nil, "cut after")
	})
	t.Run("checksum file lacks the entry", func(t *testing.T) {
		u := newUpstream(t)
		u.add(helloURL, data)
		u.add(helloURL+".sha256", []byte(sum(data)+"  hello-arm64.tar.gz\n"+sum(data)+"  hello-riscv64.tar.gz\n"))
		badBake(t, u, goodRecipe, nil, `no sha256 for "hello-amd64.tar.gz"`)
	})
	t.Run("no checksum at all", func(t *testing.T) {
		u := newUpstream(t)
		u.add(helloURL, data)
		src := strings.Replace(goodRecipe, "    checksum:\n      url: ${url}.sha256\n", "", 1)
		badBake(t, u, src, nil, "pass --sha256 hello=HEX")
	})
	t.Run("archive path missing", func(t *testing.T) {
		u := newUpstream(t)
		other := tgz(t, exe("hello/hello", "x"))
		u.add(helloURL, other)
		badBakeCache(t, u, goodRecipe, map[string]string{"hello": sum(other)}, `matches "hello-1.0/hello"; it has hello/hello`, false)
	})
}

// TestBakeArchiveCannotEscape: an archive whose directory is a symlink
// out of the tree cannot make the baker write through it.
func TestBakeArchiveCannotEscape(t *testing.T) {
	testenv.RequireTool(t, "mksquashfs")
	outside := t.TempDir()
	data := tgz(t,
		member{name: "hello-1.0", link: outside},
		exe("hello-1.0/hello", "#!/bin/sh\n"),
		exe("../../escape", "#!/bin/sh\n"))
	src := strings.Replace(goodRecipe, `  - {from: "hello-${version}/hello", to: /usr/bin/}`, `  - {from: "*", to: /usr/lib/hello/}
  - {from: "hello-${version}/hello", to: /usr/lib/hello/hello-1.0/}`, 1)
	u := newUpstream(t)
	u.add(helloURL, data)
	badBakeCache(t, u, src, map[string]string{"hello": sum(data)}, "climbs above the root", false)
	if entries, _ := os.ReadDir(outside); len(entries) != 0 {
		t.Errorf("the baker wrote through an archive's symlink: %v", entries)
	}
}

// TestBakeHardLinkCannotLeakHostFiles is issue 19's first point: an
// archive with a symlink pkg/evil to a host directory and a hard link
// pkg/leak to pkg/evil/shadow linked the host's file into the download
// cache and from there into the image. The archive is refused, and the
// host file gains no link.
func TestBakeHardLinkCannotLeakHostFiles(t *testing.T) {
	testenv.RequireTool(t, "mksquashfs")
	host := t.TempDir()
	secret := filepath.Join(host, "etc", "shadow")
	os.MkdirAll(filepath.Dir(secret), 0o755)
	if err := os.WriteFile(secret, []byte("root:$6$secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, target := range []string{filepath.Join(host, "etc"), strings.Repeat("../", 16) + strings.TrimPrefix(filepath.Join(host, "etc"), "/")} {
		data := tgz(t,
			member{name: "pkg", dir: true},
			member{name: "pkg/evil", link: target},
			member{name: "pkg/leak", hard: "pkg/evil/shadow"},
			exe("hello-1.0/hello", "#!/bin/sh\n"))
		for _, rule := range []string{`{from: "pkg/leak", to: /usr/lib/hello/leak}`, `{from: "pkg/", to: /usr/lib/hello/}`} {
			src := strings.Replace(goodRecipe, `  - {from: "hello-${version}/hello", to: /usr/bin/}`, `  - {from: "hello-${version}/hello", to: /usr/bin/}
  - `+rule, 1)
			res, out, _, err := bakeArchive(t, src, data, 0)
			if err == nil {
				t.Errorf("%s, %s: baked %s from an archive that links a host file", target, rule, res.Image.Path)
			} else if !strings.Contains(err.Error(), `hard link target "pkg/evil/shadow"`) || strings.Contains(err.Error(), "\n") {
				t.Errorf("%s, %s: err = %v", target, rule, err)
			}
			if fi, err := os.Stat(secret); err != nil || fi.Sys().(*syscall.Stat_t).Nlink != 1 {
				t.Fatalf("%s, %s: the host file was linked into the cache or the image", target, rule)
			}
			if ents, _ := os.ReadDir(out); len(ents) != 0 {
				t.Errorf("left %v in the output directory", ents)
			}
		}
	}
}

// TestBakeMaxSize: an archive that unpacks to more than --max-size (a
// 200-byte tar.gz holding a 200 MiB sparse file) is refused before it
// fills the disk, and nothing is left in the cache's trees or the output.
func TestBakeMaxSize(t *testing.T) {
	testenv.RequireTool(t, "mksquashfs")
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	zw.Write(tartest.Sparse("big", 200<<20))
	zw.Close()
	data := b.Bytes()
	src := strings.Replace(goodRecipe, `  - {from: "hello-${version}/hello", to: /usr/bin/}`, `  - {from: "big", to: /usr/lib/hello/big}`, 1)
	src = strings.Replace(src, "    checksum:\n      url: ${url}.sha256\n", "", 1)
	src = strings.Replace(src, "    enable: true\n", "", 1)
	_, out, cache, err := bakeArchive(t, src, data, 100<<20)
	if err == nil || !strings.Contains(err.Error(), "larger than --max-size 100.0 MiB") || strings.Contains(err.Error(), "\n") {
		t.Fatalf("err = %v", err)
	}
	if trees, _ := os.ReadDir(filepath.Join(cache, "trees", "sha256")); len(trees) != 0 {
		t.Errorf("left %v in the cache's trees", trees)
	}
	if ents, _ := os.ReadDir(out); len(ents) != 0 {
		t.Errorf("left %v in the output directory", ents)
	}
}

// bakeArchive bakes src, whose one download (hello's) an upstream serves as
// data, pinned by its sum, into fresh output and cache directories (that
// leave nothing behind); maxSize is BakeOptions.MaxSize.
func bakeArchive(t *testing.T, src string, data []byte, maxSize int64) (res *BakeResult, out, cache string, err error) {
	t.Helper()
	u := newUpstream(t)
	u.add(helloURL, data)
	cache = testenv.TempDirNoLeak(t, ".#")
	out = testenv.TempDirNoLeak(t, ".#")
	res, err = Bake(context.Background(), BakeOptions{
		Recipe:   mustParse(t, src),
		Resolve:  ResolveOptions{Version: "1.0", Arch: "x86-64", SHA256: map[string]string{"hello": sum(data)}},
		Output:   out,
		CacheDir: cache,
		Mirror:   u.mirror(),
		MaxSize:  maxSize,
	})
	return res, out, cache, err
}

func TestBakeRefusesExistingOutputBeforeDownloading(t *testing.T) {
	u := newUpstream(t)
	out := t.TempDir()
	if err := os.WriteFile(filepath.Join(out, "hello-1.0-x86-64.raw"), []byte("mine"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := Bake(context.Background(), BakeOptions{Recipe: mustParse(t, goodRecipe), Resolve: ResolveOptions{Version: "1.0", Arch: "x86-64"}, Output: out, CacheDir: t.TempDir(), Mirror: u.mirror()})
	if err == nil || !strings.Contains(err.Error(), "--force") {
		t.Fatalf("got %v, want an error naming --force", err)
	}
	if n := u.count(helloURL); n != 0 {
		t.Errorf("downloaded %d times before refusing", n)
	}
}

func TestParseChecksumFile(t *testing.T) {
	h := strings.Repeat("ab", 32)
	o := strings.Repeat("cd", 32)
	for _, tc := range []struct{ file, entry, want string }{
		{h + "\n", "x.tgz", h},
		{o + "  a.tgz\n" + h + "  x.tgz\n", "x.tgz", h},
		{o + " *a.tgz\n" + h + " *x.tgz\n", "x.tgz", h},
		{o + "  ./a.tgz\n" + h + "  ./x.tgz\n", "x.tgz", h},
		{"SHA256 (a.tgz) = " + o + "\nSHA256 (x.tgz) = " + strings.ToUpper(h) + "\n", "x.tgz", h},
		{"# comment\n" + h + "  dir/x.tgz\n", "x.tgz", h},
	} {
		got, err := ParseChecksumFile([]byte(tc.file), tc.entry)
		if err != nil || got != tc.want {
			t.Errorf("ParseChecksumFile(%q) = %q, %v; want %q", tc.file, got, err, tc.want)
		}
	}
	if _, err := ParseChecksumFile([]byte(h+"\n"+o+"\n"), "x.tgz"); !errors.Is(err, ErrNoChecksum) {
		t.Errorf("two lone digests: %v, want ErrNoChecksum", err)
	}
}

func TestMirrorURL(t *testing.T) {
	for _, tc := range []struct{ mirror, in, want string }{
		{"", "https://a.example/x/y.tgz", "https://a.example/x/y.tgz"},
		{"http://127.0.0.1:8080/", "https://a.example/x/y.tgz", "http://127.0.0.1:8080/a.example/x/y.tgz"},
		{"http://m/base", "https://a.example/r/v1.2+k3s1/k3s", "http://m/base/a.example/r/v1.2+k3s1/k3s"},
		{"/srv/mirror", "https://a.example/x/../../y.tgz", "/srv/mirror/a.example/y.tgz"},
		{"file:///srv/mirror", "https://a.example/x", "/srv/mirror/a.example/x"},
	} {
		got, err := MirrorURL(tc.mirror, tc.in)
		if err != nil || got != tc.want {
			t.Errorf("MirrorURL(%q, %q) = %q, %v; want %q", tc.mirror, tc.in, got, err, tc.want)
		}
	}
}
