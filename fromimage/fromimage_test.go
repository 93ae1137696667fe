package fromimage_test

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/sysext/sysext/builder"
	"github.com/sysext/sysext/extension"
	"github.com/sysext/sysext/fromimage"
	"github.com/sysext/sysext/internal/testenv"
	"github.com/sysext/sysext/oci"
	"github.com/sysext/sysext/oci/ocitest"
)

type ent struct {
	name, body string
	dir        bool
}

func f(name, body string) ent { return ent{name: name, body: body} }
func d(name string) ent       { return ent{name: name, dir: true} }

type layer struct {
	blob   []byte
	diffID digest.Digest
}

func mkLayer(t testing.TB, es ...ent) layer {
	var tb bytes.Buffer
	tw := tar.NewWriter(&tb)
	for _, e := range es {
		h := &tar.Header{Name: e.name, Mode: 0o755, Typeflag: tar.TypeReg, Size: int64(len(e.body)), ModTime: time.Unix(1700000000, 0)}
		if e.dir {
			h.Typeflag, h.Size = tar.TypeDir, 0
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		tw.Write([]byte(e.body))
	}
	tw.Close()
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(tb.Bytes())
	zw.Close()
	return layer{gz.Bytes(), digest.FromBytes(tb.Bytes())}
}

// push stores an image of layers under tag and returns its reference.
func push(t testing.TB, reg *ocitest.Registry, repoTag, arch string, layers ...layer) string {
	t.Helper()
	var ls []ocitest.Layer
	for _, l := range layers {
		ls = append(ls, ocitest.Layer{Blob: l.blob, DiffID: l.diffID})
	}
	return ocitest.PushImage(t, reg, repoTag, ocispec.Image{Platform: ocispec.Platform{OS: "linux", Architecture: arch}}, ls...)
}

// hostOSRelease is the host's ID and VERSION_ID, so that the base "is"
// this host and its extension merges here.
func hostOSRelease(t testing.TB) string {
	b, err := os.ReadFile("/etc/os-release")
	if err != nil {
		t.Skip("no /etc/os-release")
	}
	var id, vid string
	for _, l := range strings.Split(string(b), "\n") {
		k, v, _ := strings.Cut(l, "=")
		v = strings.Trim(v, `"`)
		switch k {
		case "ID":
			id = v
		case "VERSION_ID":
			vid = v
		}
	}
	return fmt.Sprintf("ID=%s\nVERSION_ID=%s\n", id, vid)
}

// fixture: a base (os-release and a few files) and a derived image that
// adds a program, a unit, a file under /etc, a package database change, a
// cache it then cleans, and deletes one base file.
type fixture struct {
	reg                  *ocitest.Registry
	base, derived        string
	baseLayers, addLayer []layer
	osRelease            string
}

var baseFiles = []ent{d("etc/"), d("usr/"), d("usr/bin/"), d("usr/lib/"), d("usr/share/"), d("usr/share/base/"),
	d("var/"), d("var/lib/"), d("var/lib/rpm/"), d("var/log/"),
	f("usr/bin/basetool", "base"), f("usr/share/base/old", "old"), f("var/lib/rpm/db", "v1"), f("var/log/base.log", "log")}

var addedFiles = []ent{d("usr/bin/"), d("usr/lib/systemd/"), d("usr/lib/systemd/system/"), d("usr/lib/sysimage/"), d("usr/lib/sysimage/rpm/"),
	d("etc/"), d("var/cache/"), d("var/cache/dnf/"),
	f("usr/bin/newtool", "#!/bin/sh\necho newtool 2.5.1-fromimage\n"),
	f("usr/lib/systemd/system/newtool.service", "[Service]\nExecStart=/usr/bin/newtool\n"),
	f("usr/lib/sysimage/rpm/rpmdb.sqlite", "db"), f("etc/newtool.conf", "conf"),
	f("var/lib/rpm/db", "v2"), f("var/cache/dnf/pkg", "cache")}

var cleanup = []ent{f("usr/share/base/.wh.old", ""), f("var/cache/dnf/.wh.pkg", ""), f("var/log/.wh.base.log", "")}

func newFixture(t testing.TB) *fixture {
	fx := &fixture{reg: ocitest.NewOlareg(t), osRelease: hostOSRelease(t)}
	fx.baseLayers = []layer{
		mkLayer(t, append([]ent{d("usr/lib/"), f("usr/lib/os-release", fx.osRelease)}, baseFiles...)...),
		mkLayer(t, d("usr/"), d("usr/share/"), f("usr/share/base/readme", "r")),
	}
	fx.addLayer = []layer{mkLayer(t, addedFiles...), mkLayer(t, cleanup...)}
	fx.base = push(t, fx.reg, "os/base:1", "amd64", fx.baseLayers...)
	fx.derived = push(t, fx.reg, "os/derived:1", "amd64", append(append([]layer{}, fx.baseLayers...), fx.addLayer...)...)
	return fx
}

// countingFetcher records the blobs fetched.
type countingFetcher struct {
	oci.Target
	mu      sync.Mutex
	fetched map[digest.Digest]bool
}

func (c *countingFetcher) Fetch(ctx context.Context, desc ocispec.Descriptor) (io.ReadCloser, error) {
	c.mu.Lock()
	c.fetched[desc.Digest] = true
	c.mu.Unlock()
	return c.Target.Fetch(ctx, desc)
}

func source(t testing.TB, s string) (fromimage.Source, *countingFetcher) {
	t.Helper()
	ref, err := oci.ParseReference(s)
	if err != nil {
		t.Fatal(err)
	}
	tg, err := oci.Open(context.Background(), ref, ocitest.TestOptions())
	if err != nil {
		t.Fatal(err)
	}
	desc, err := tg.Resolve(context.Background(), ref.Reference())
	if err != nil {
		t.Fatal(err)
	}
	cf := &countingFetcher{Target: tg, fetched: map[digest.Digest]bool{}}
	return fromimage.Source{Fetcher: cf, Desc: desc, Name: s}, cf
}

func files(t testing.TB, dir string) []string {
	var out []string
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			rel, _ := filepath.Rel(dir, p)
			out = append(out, rel)
		}
		return nil
	})
	sort.Strings(out)
	return out
}

var wantFiles = []string{"usr/bin/newtool", "usr/lib/systemd/system/newtool.service"}

func TestByLayers(t *testing.T) {
	fx := newFixture(t)
	img, _ := source(t, fx.derived)
	base, bf := source(t, fx.base)
	opts := fromimage.Options{Image: img, Base: base, Arch: "x86-64"}

	tree := t.TempDir()
	_, err := fromimage.Prepare(context.Background(), tree, opts)
	if !errors.Is(err, fromimage.ErrDeletions) || !strings.Contains(err.Error(), "/usr/share/base/old") || strings.Contains(err.Error(), "var/") {
		t.Fatalf("err = %v", err)
	}
	if got := files(t, tree); len(got) != 0 {
		t.Fatalf("tree after a refusal: %v", got)
	}

	opts.IgnoreDeletions = true
	res, err := fromimage.Prepare(context.Background(), tree, opts)
	if err != nil {
		t.Fatal(err)
	}
	if got := files(t, tree); strings.Join(got, " ") != strings.Join(wantFiles, " ") {
		t.Fatalf("tree = %v, want %v", got, wantFiles)
	}
	if res.Mode != fromimage.ByLayers || res.SharedLayers != 2 || res.AddedLayers != 2 {
		t.Fatalf("result %+v", res)
	}
	if s := res.Summary(); s != "dropped etc/ (1), usr/lib/sysimage/ (1), var/ (1)" {
		t.Fatalf("summary %q", s)
	}
	if strings.Join(res.OtherDeletes, " ") != "/var/log/base.log" {
		t.Fatalf("other deletions %v", res.OtherDeletes)
	}
	for _, l := range fx.baseLayers {
		if bf.fetched[digest.FromBytes(l.blob)] {
			t.Fatal("a base layer was downloaded")
		}
	}

	// Bound to the base: its os-release is read from its layers.
	tree2 := t.TempDir()
	opts.BaseOSRelease = true
	opts.Keep = []string{"/usr/lib/sysimage/rpm"}
	res, err = fromimage.Prepare(context.Background(), tree2, opts)
	if err != nil {
		t.Fatal(err)
	}
	if want := hostOSRelease(t); "ID="+res.OSRelease.Get("ID")+"\nVERSION_ID="+res.OSRelease.Get("VERSION_ID")+"\n" != want {
		t.Fatalf("os-release %v, want %q", res.OSRelease, want)
	}
	if _, err := os.Stat(filepath.Join(tree2, "usr/lib/sysimage/rpm/rpmdb.sqlite")); err != nil {
		t.Fatalf("--keep: %v", err)
	}
}

func TestByFiles(t *testing.T) {
	fx := newFixture(t)
	// The same content flattened into one layer (no shared layers),
	// without the deleted files.
	var es []ent
	for _, e := range append(append(append([]ent{d("usr/lib/"), f("usr/lib/os-release", fx.osRelease)}, baseFiles...), addedFiles...), f("usr/share/base/readme", "r")) {
		switch e.name {
		case "usr/share/base/old", "var/cache/dnf/pkg", "var/log/base.log":
			continue
		}
		es = append(es, e)
	}
	flat := mkLayer(t, es...)
	ref := push(t, fx.reg, "os/flat:1", "amd64", flat)
	img, _ := source(t, ref)
	base, _ := source(t, fx.base)
	tree := t.TempDir()
	_, err := fromimage.Prepare(context.Background(), tree, fromimage.Options{Image: img, Base: base, Arch: "x86-64"})
	if !errors.Is(err, fromimage.ErrDeletions) || !strings.Contains(err.Error(), "/usr/share/base/old") {
		t.Fatalf("err = %v", err)
	}
	res, err := fromimage.Prepare(context.Background(), tree, fromimage.Options{Image: img, Base: base, Arch: "x86-64", IgnoreDeletions: true})
	if err != nil {
		t.Fatal(err)
	}
	if got := files(t, tree); strings.Join(got, " ") != strings.Join(wantFiles, " ") || res.Mode != fromimage.ByFiles {
		t.Fatalf("tree = %v (%s), want %v", got, res.Mode, wantFiles)
	}
}

func TestRefusals(t *testing.T) {
	fx := newFixture(t)
	base, _ := source(t, fx.base)
	cases := []struct {
		name   string
		layers []layer
		arch   string
		want   string
	}{
		{"not-based", []layer{mkLayer(t, d("usr/"), d("usr/lib/"), f("usr/lib/os-release", "ID=other\nVERSION_ID=1\n"), f("usr/bin/x", "x"))}, "amd64",
			"is not based on"},
		{"nothing-added", append(append([]layer{}, fx.baseLayers...), mkLayer(t, d("etc/"), f("etc/only.conf", "x"), d("var/"), f("var/x", "y"))), "amd64",
			"nothing added under usr/ or opt/: the build changed only etc/ (1), var/ (1)"},
		{"escape", append(append([]layer{}, fx.baseLayers...), mkLayer(t, f("../evil", "x"))), "amd64", "climbs above the root"},
		{"other-platform", fx.baseLayers, "arm64", "linux/arm64, not amd64"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ref := push(t, fx.reg, "os/"+c.name+":1", c.arch, c.layers...)
			img, _ := source(t, ref)
			dir := t.TempDir()
			tree := filepath.Join(dir, "tree")
			os.Mkdir(tree, 0o755)
			_, err := fromimage.Prepare(context.Background(), tree, fromimage.Options{Image: img, Base: base, Arch: "x86-64", IgnoreDeletions: true})
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want %q", err, c.want)
			}
			if ents, _ := os.ReadDir(dir); len(ents) != 1 {
				t.Fatalf("left behind: %v", ents)
			}
			if got := files(t, tree); len(got) != 0 {
				t.Fatalf("tree: %v", got)
			}
		})
	}
}

func TestCorruptLayerRefused(t *testing.T) {
	fx := newFixture(t)
	img, _ := source(t, fx.derived)
	base, _ := source(t, fx.base)
	img.Fetcher = ocitest.CorruptFetcher{Fetcher: img.Fetcher, Victim: digest.FromBytes(fx.addLayer[0].blob)}
	_, err := fromimage.Prepare(context.Background(), t.TempDir(), fromimage.Options{Image: img, Base: base, Arch: "x86-64", IgnoreDeletions: true})
	if err == nil || !strings.Contains(err.Error(), "refused") {
		t.Fatalf("err = %v", err)
	}
}

// TestMergeBoundToBase builds the extension bound to the base's
// os-release (this host's) and has the real systemd-sysext merge it on
// this host, then refuse it on a root whose os-release differs.
func TestMergeBoundToBase(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireTool(t, "mksquashfs")
	fx := newFixture(t)
	img, _ := source(t, fx.derived)
	base, _ := source(t, fx.base)
	tree := t.TempDir()
	res, err := fromimage.Prepare(context.Background(), tree, fromimage.Options{Image: img, Base: base, Arch: "x86-64", IgnoreDeletions: true, BaseOSRelease: true})
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(testenv.TempDirNoLeak(t, ".#"), "newtool.raw")
	built, err := builder.Build(context.Background(), builder.Options{Tree: tree, Output: out, Compression: "lz4",
		Meta: extension.Metadata{Name: "newtool", Version: "2.5.1", Arch: "x86-64", ID: res.OSRelease.Get("ID"), VersionID: res.OSRelease.Get("VERSION_ID")}})
	if err != nil {
		t.Fatal(err)
	}
	got, err := testenv.MergeAndRun(t, []string{built.Path}, "newtool", "cat /usr/lib/extension-release.d/extension-release.newtool")
	if err != nil || !strings.Contains(got, "newtool 2.5.1-fromimage\n") || !strings.Contains(got, "VERSION_ID="+res.OSRelease.Get("VERSION_ID")) {
		t.Fatalf("merge on the base's OS: %v\n%s", err, got)
	}
	other := filepath.Join(t.TempDir(), "os-release")
	os.WriteFile(other, []byte("ID="+res.OSRelease.Get("ID")+"\nVERSION_ID=0.other\n"), 0o644)
	got, err = testenv.RunInNamespace(t, fmt.Sprintf(`mount --bind %s /etc/os-release
cp %s /run/extensions/
systemd-sysext merge || true
if [ -e /usr/lib/extension-release.d/extension-release.newtool ]; then echo MERGED; else echo REFUSED; fi`,
		testenv.ShellQuote(other), testenv.ShellQuote(built.Path)))
	if err != nil || !strings.Contains(got, "REFUSED") {
		t.Fatalf("merge on another OS version: %v\n%s", err, got)
	}
}
