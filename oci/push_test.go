package oci_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/sysext/sysext/extension"
	"github.com/sysext/sysext/internal/testenv"
	"github.com/sysext/sysext/oci"
	"github.com/sysext/sysext/oci/ocitest"
)

func TestPushResolveDownload(t *testing.T) {
	ctx := context.Background()
	reg := ocitest.NewOlareg(t)
	amd := ocitest.Squashfs(t, ocitest.Meta("hello", "1.0", "x86-64"), []byte("amd64 payload"))
	arm := ocitest.Squashfs(t, ocitest.Meta("hello", "1.0", "arm64"), []byte("arm64 payload"))
	tg, ref := reg.Open(t, "ext/hello:1.0")
	res, err := oci.Push(ctx, tg, ref, []string{amd, arm}, oci.PushOptions{Source: "https://example.org/hello"})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Manifests) != 2 {
		t.Fatalf("pushed %d manifests", len(res.Manifests))
	}
	for _, arch := range []extension.Arch{"x86-64", "arm64"} {
		r, err := oci.Resolve(ctx, tg, ref, arch)
		if err != nil {
			t.Fatal(err)
		}
		if r.Kind != oci.KindSysext || r.Metadata.Arch != arch || r.Metadata.Name != "hello" {
			t.Fatalf("resolved %+v", r.Entry)
		}
		if want := "hello-1.0-" + string(arch) + ".raw"; r.FileName != want {
			t.Errorf("file name %q, want %q", r.FileName, want)
		}
		dir := testenv.TempDirNoLeak(t, ".#")
		d, err := oci.Download(ctx, tg, &r.Entry, oci.DownloadOptions{Dir: dir})
		if err != nil {
			t.Fatal(err)
		}
		src := amd
		if arch == "arm64" {
			src = arm
		}
		a, _ := os.ReadFile(src)
		b, _ := os.ReadFile(d.Path)
		if !bytes.Equal(a, b) {
			t.Fatalf("%s: downloaded bytes differ from the pushed file", arch)
		}
		if d.Info == nil || d.Info.Name != "hello" || d.Info.Meta.Arch != arch {
			t.Fatalf("info %+v", d.Info)
		}
	}
	_, err = oci.Resolve(ctx, tg, ref, "riscv64")
	if !errors.Is(err, oci.ErrNoPlatform) || !strings.Contains(err.Error(), "available: linux/amd64, linux/arm64") {
		t.Fatalf("missing platform: %v", err)
	}
	t.Logf("missing platform: %v", err)
	a, err := oci.Describe(ctx, tg, ref)
	if err != nil {
		t.Fatal(err)
	}
	if len(a.Entries) != 2 || a.Index == nil || a.Index.Annotations[oci.AnnotationSource] != "https://example.org/hello" {
		t.Fatalf("describe: %+v", a)
	}
}

func TestPushAppendAndLayout(t *testing.T) {
	ctx := context.Background()
	amd := ocitest.Squashfs(t, ocitest.Meta("hello", "1.0", "x86-64"), []byte("amd"))
	arm := ocitest.Squashfs(t, ocitest.Meta("hello", "1.0", "arm64"), []byte("arm"))
	arm2 := ocitest.Squashfs(t, ocitest.Meta("hello", "1.0", "arm64"), []byte("arm, rebuilt"))
	tg, ref := ocitest.OpenLayout(t, "1.0")
	if _, err := oci.Push(ctx, tg, ref, []string{amd}, oci.PushOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := oci.Push(ctx, tg, ref, []string{arm}, oci.PushOptions{Append: true}); err != nil {
		t.Fatal(err)
	}
	res, err := oci.Push(ctx, tg, ref, []string{arm2}, oci.PushOptions{Append: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Kept) != 1 {
		t.Fatalf("kept %d entries, want the amd64 one", len(res.Kept))
	}
	r, err := oci.Resolve(ctx, tg, ref, "arm64")
	if err != nil {
		t.Fatal(err)
	}
	if r.Descriptor.Digest != res.Manifests[0].Descriptor.Digest {
		t.Fatalf("append did not replace arm64")
	}
	if _, err := oci.Resolve(ctx, tg, ref, "x86-64"); err != nil {
		t.Fatalf("append dropped amd64: %v", err)
	}
	// Without --append, the tag holds only what was pushed.
	if _, err := oci.Push(ctx, tg, ref, []string{arm}, oci.PushOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := oci.Resolve(ctx, tg, ref, "x86-64"); !errors.Is(err, oci.ErrNoPlatform) {
		t.Fatalf("push without --append kept amd64: %v", err)
	}
}

func TestPushRefusesBadInput(t *testing.T) {
	ctx := context.Background()
	reg := ocitest.NewOlareg(t)
	tg, ref := reg.Open(t, "ext/hello:1")
	a := ocitest.Squashfs(t, ocitest.Meta("hello", "1.0", "x86-64"), []byte("a"))
	b := ocitest.Squashfs(t, ocitest.Meta("hello", "1.1", "x86-64"), []byte("b"))
	other := ocitest.Squashfs(t, ocitest.Meta("other", "1.0", "arm64"), []byte("c"))
	junk := filepath.Join(t.TempDir(), "junk.raw")
	os.WriteFile(junk, bytes.Repeat([]byte("junk"), 4096), 0o644)
	for name, tc := range map[string]struct {
		files []string
		want  string
	}{
		"same arch twice": {[]string{a, b}, "both for linux/amd64"},
		"two extensions":  {[]string{a, other}, "push each extension to its own tag"},
		"not an image":    {[]string{junk}, "not a squashfs, EROFS or GPT"},
		"missing file":    {[]string{"/nonexistent.raw"}, "no such file"},
	} {
		_, err := oci.Push(ctx, tg, ref, tc.files, oci.PushOptions{})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want an error containing %q", name, err, tc.want)
		}
	}
	if _, err := tg.Resolve(ctx, "1"); err == nil {
		t.Fatal("a refused push left a tag behind")
	}
}

func TestEROFSAndAnyArch(t *testing.T) {
	ctx := context.Background()
	mkfs := testenv.RequireTool(t, "mkfs.erofs")
	m := ocitest.Meta("anyext", "2", extension.AnyArch)
	root := filepath.Join(t.TempDir(), "root")
	rel := filepath.Join(root, extension.ReleasePath(m.Name))
	os.MkdirAll(filepath.Dir(rel), 0o755)
	os.WriteFile(rel, m.Release().Format(), 0o644)
	img := filepath.Join(t.TempDir(), "anyext.raw")
	if out, err := exec.Command(mkfs, img, root).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.erofs: %v %s", err, out)
	}
	reg := ocitest.NewOlareg(t)
	tg, ref := reg.Open(t, "ext/anyext:2")
	res, err := oci.Push(ctx, tg, ref, []string{img}, oci.PushOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if res.Manifests[0].Descriptor.Platform != nil || res.Manifests[0].Layer.MediaType != oci.MediaTypeEROFS {
		t.Fatalf("pushed %+v", res.Manifests[0])
	}
	for _, arch := range []extension.Arch{"x86-64", "arm64", "riscv64"} {
		r, err := oci.Resolve(ctx, tg, ref, arch)
		if err != nil {
			t.Fatalf("%s: %v", arch, err)
		}
		if arch == "arm64" {
			d, err := oci.Download(ctx, tg, &r.Entry, oci.DownloadOptions{Dir: testenv.TempDirNoLeak(t, ".#")})
			if err != nil {
				t.Fatal(err)
			}
			if d.Info.Format != "erofs" || filepath.Base(d.Path) != "anyext-2-_any.raw" {
				t.Fatalf("downloaded %s (%s)", d.Path, d.Info.Format)
			}
		}
	}
}

// Push tells Progress how far each file's upload is, ending with the whole
// file (the upload sends the file itself, so the offset is watched).
func TestPushProgress(t *testing.T) {
	ctx := context.Background()
	reg := ocitest.NewOlareg(t)
	img := ocitest.Squashfs(t, ocitest.Meta("hello", "1.0", "x86-64"), bytes.Repeat([]byte("payload "), 1<<17))
	fi, err := os.Stat(img)
	if err != nil {
		t.Fatal(err)
	}
	tg, ref := reg.Open(t, "ext/hello:1.0")
	var mu sync.Mutex
	var calls [][2]int64
	_, err = oci.Push(ctx, tg, ref, []string{img}, oci.PushOptions{Progress: func(file string, done, total int64) {
		if file != img {
			t.Errorf("progress for %s, want %s", file, img)
		}
		mu.Lock()
		calls = append(calls, [2]int64{done, total})
		mu.Unlock()
	}})
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(calls) == 0 || calls[len(calls)-1] != [2]int64{fi.Size(), fi.Size()} {
		t.Fatalf("progress calls %v: want the last to be %d of %d", calls, fi.Size(), fi.Size())
	}
	for i := 1; i < len(calls); i++ {
		if calls[i][0] < calls[i-1][0] || calls[i][1] != fi.Size() {
			t.Fatalf("progress calls %v: want done rising and total %d", calls, fi.Size())
		}
	}
}
