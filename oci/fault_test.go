package oci_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"oras.land/oras-go/v2"
	"oras.land/oras-go/v2/registry/remote"
	"oras.land/oras-go/v2/registry/remote/errcode"

	"github.com/sysext/sysext/internal/testenv"
	"github.com/sysext/sysext/oci"
	"github.com/sysext/sysext/oci/ocitest"
)

// pushed is a one-architecture artifact pushed for a fault test.
type pushed struct {
	tg   oci.Target
	ref  oci.Reference
	file string
	r    *oci.Resolved
}

// pushImage pushes a squashfs image with a payload of size random bytes to
// reg (which may inject faults) and resolves it for x86-64.
func pushImage(t testing.TB, reg *ocitest.Registry, size int) pushed {
	t.Helper()
	payload := make([]byte, size)
	rand.Read(payload)
	file := ocitest.Squashfs(t, ocitest.Meta("hello", "1.0", "x86-64"), payload)
	tg, ref := reg.Open(t, "ext/hello:1.0")
	if _, err := oci.Push(context.Background(), tg, ref, []string{file}, oci.PushOptions{}); err != nil {
		t.Fatal(err)
	}
	r, err := oci.Resolve(context.Background(), tg, ref, "x86-64")
	if err != nil {
		t.Fatal(err)
	}
	return pushed{tg, ref, file, r}
}

// emptyDir fails the test if dir has any entry.
func emptyDir(t *testing.T, dir string) {
	t.Helper()
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		t.Errorf("left behind in %s: %s", dir, e.Name())
	}
}

// faultyReg starts olareg with a switchable fault: nothing misbehaves
// until *on is set, so the test can push first.
func faultyReg(t *testing.T, f ocitest.Fault) (*ocitest.Registry, *bool) {
	on := new(bool)
	reg := ocitest.NewOlareg(t, func(w http.ResponseWriter, r *http.Request, next http.Handler) bool {
		return *on && f(w, r, next)
	})
	return reg, on
}

func TestDownloadResumesCutConnection(t *testing.T) {
	var cuts ocitest.Counter
	reg, on := faultyReg(t, ocitest.CutBlob(300<<10, 2, &cuts))
	p := pushImage(t, reg, 1<<20)
	*on = true
	dir := testenv.TempDirNoLeak(t, ".#")
	d, err := oci.Download(context.Background(), p.tg, &p.r.Entry, oci.DownloadOptions{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if cuts.N() != 2 || d.Resumes != 2 {
		t.Fatalf("cuts %d, resumes %d; want 2 and 2", cuts.N(), d.Resumes)
	}
	want, _ := os.ReadFile(p.file)
	got, _ := os.ReadFile(d.Path)
	if !bytes.Equal(want, got) {
		t.Fatal("resumed download differs from the pushed file")
	}
}

// A download cancelled while the blob streams stops every stage (reader,
// hasher, writer), says why and leaves nothing in the directory. The blob
// is larger than all the stream buffers together, so the reader is still
// sending when the writer stops.
func TestDownloadCancelledMidStream(t *testing.T) {
	reg := ocitest.NewOlareg(t)
	p := pushImage(t, reg, 24<<20)
	dir := testenv.TempDirNoLeak(t, ".#")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var last int64
	_, err := oci.Download(ctx, p.tg, &p.r.Entry, oci.DownloadOptions{Dir: dir, Progress: func(done, total int64) {
		if done <= last || total != p.r.Entry.Layer.Size {
			t.Errorf("progress %d of %d after %d", done, total, last)
		}
		last = done
		if done >= 2<<20 {
			cancel()
		}
	}})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v, want context.Canceled", err)
	}
	if last >= p.r.Entry.Layer.Size {
		t.Fatalf("the whole blob was written (%d bytes) before the cancel took effect", last)
	}
	emptyDir(t, dir)
}

func TestDownloadGivesUpAfterResumes(t *testing.T) {
	reg, on := faultyReg(t, ocitest.CutBlob(64<<10, -1))
	p := pushImage(t, reg, 2<<20)
	*on = true
	dir := testenv.TempDirNoLeak(t, ".#")
	_, err := oci.Download(context.Background(), p.tg, &p.r.Entry, oci.DownloadOptions{Dir: dir, MaxResumes: 3})
	if err == nil || !strings.Contains(err.Error(), "after 3 resumes") {
		t.Fatalf("got %v", err)
	}
	t.Log(err)
	emptyDir(t, dir)
}

func TestDownloadRefusesCorruptBlob(t *testing.T) {
	reg, on := faultyReg(t, ocitest.CorruptBlob(-1))
	p := pushImage(t, reg, 64<<10)
	*on = true
	dir := testenv.TempDirNoLeak(t, ".#")
	_, err := oci.Download(context.Background(), p.tg, &p.r.Entry, oci.DownloadOptions{Dir: dir})
	if err == nil || !strings.Contains(err.Error(), "do not match the digest") {
		t.Fatalf("got %v", err)
	}
	t.Log(err)
	emptyDir(t, dir)
}

func TestDownloadRefusesSizeMismatch(t *testing.T) {
	for name, edit := range map[string]func([]byte) []byte{
		"short": func(b []byte) []byte { return b[:len(b)-1] },
		"long":  func(b []byte) []byte { return append(b, 0) },
	} {
		t.Run(name, func(t *testing.T) {
			reg, on := faultyReg(t, ocitest.RewriteBody(ocitest.Blobs, -1, edit))
			p := pushImage(t, reg, 64<<10)
			*on = true
			dir := testenv.TempDirNoLeak(t, ".#")
			_, err := oci.Download(context.Background(), p.tg, &p.r.Entry, oci.DownloadOptions{Dir: dir})
			var sm *oci.SizeMismatchError
			if !errors.As(err, &sm) || sm.Digest != p.r.Entry.Layer.Digest || sm.Size != p.r.Entry.Layer.Size {
				t.Fatalf("got %v, want a *SizeMismatchError for the layer", err)
			}
			if !strings.Contains(err.Error(), "size mismatch") {
				t.Fatalf("got %v", err)
			}
			t.Log(err)
			emptyDir(t, dir)
		})
	}
}

// A registry refusing the blob answers with its status and errors, as
// oras-go reports them, so Explain can word it.
func TestDownloadRefusedBlobIsAnErrorResponse(t *testing.T) {
	reg, on := faultyReg(t, ocitest.FailStatus(http.StatusForbidden, -1, ocitest.Blobs))
	p := pushImage(t, reg, 4<<10)
	*on = true
	dir := testenv.TempDirNoLeak(t, ".#")
	_, err := oci.Download(context.Background(), p.tg, &p.r.Entry, oci.DownloadOptions{Dir: dir})
	var er *errcode.ErrorResponse
	if !errors.As(err, &er) || er.StatusCode != http.StatusForbidden || len(er.Errors) != 1 || er.Errors[0].Message != "injected 403" {
		t.Fatalf("got %v, want the registry's 403 as an errcode.ErrorResponse", err)
	}
	if got := oci.Explain(p.ref, err); !strings.Contains(got.Error(), "access denied") {
		t.Fatalf("Explain: %v", got)
	}
	emptyDir(t, dir)
}

func TestRetriesThenSucceeds(t *testing.T) {
	for _, code := range []int{500, 429} {
		var n ocitest.Counter
		reg, on := faultyReg(t, ocitest.FailStatus(code, 2, ocitest.Any, &n))
		p := pushImage(t, reg, 4<<10)
		*on = true
		r, err := oci.Resolve(context.Background(), p.tg, p.ref, "x86-64")
		if err != nil {
			t.Fatalf("%d twice, then fine: %v", code, err)
		}
		dir := testenv.TempDirNoLeak(t, ".#")
		if _, err := oci.Download(context.Background(), p.tg, &r.Entry, oci.DownloadOptions{Dir: dir}); err != nil {
			t.Fatal(err)
		}
		if n.N() != 2 {
			t.Fatalf("fault fired %d times", n.N())
		}
	}
}

func TestRetriesAreBounded(t *testing.T) {
	for code, want := range map[int]string{500: "keeps failing (500 Internal Server Error) after retries", 429: "429 Too Many Requests after retries"} {
		var n ocitest.Counter
		reg, on := faultyReg(t, ocitest.FailStatus(code, -1, ocitest.Any, &n))
		p := pushImage(t, reg, 4<<10)
		*on = true
		_, err := oci.Resolve(context.Background(), p.tg, p.ref, "x86-64")
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("%d: got %v", code, err)
		}
		if n.N() != 3 { // one try and MaxRetries=2
			t.Fatalf("%d: %d requests, want 3", code, n.N())
		}
		t.Log(err)
		// Blob downloads are bounded too and leave nothing.
		dir := testenv.TempDirNoLeak(t, ".#")
		if _, err := oci.Download(context.Background(), p.tg, &p.r.Entry, oci.DownloadOptions{Dir: dir}); err == nil {
			t.Fatalf("%d: download succeeded", code)
		}
		emptyDir(t, dir)
	}
}

func TestMissingTag(t *testing.T) {
	reg := ocitest.NewOlareg(t)
	p := pushImage(t, reg, 1024)
	_, err := oci.Resolve(context.Background(), p.tg, p.ref.WithTag("2.0"), "")
	if !errors.Is(err, oci.ErrNotFound) || !strings.Contains(err.Error(), "tag 2.0 not found") {
		t.Fatalf("got %v", err)
	}
	t.Log(err)
}

// pushRaw pushes a one-layer manifest the way other tools do and tags it.
func pushRaw(t *testing.T, tg oras.Target, tag string, layer []byte, layerType, artifactType string, layerAnn, manAnn map[string]string) {
	t.Helper()
	ocitest.PushRaw(t, tg, tag, layer, layerType, artifactType, layerAnn, manAnn)
}

func TestRefusesNonImageLayer(t *testing.T) {
	reg := ocitest.NewOlareg(t)
	tg, ref := reg.Open(t, "ext/junk:1")
	pushRaw(t, tg, "1", bytes.Repeat([]byte("not an image "), 1000), "application/octet-stream", "", map[string]string{oci.AnnotationTitle: "junk.raw"}, nil)
	r, err := oci.Resolve(context.Background(), tg, ref, "")
	if err != nil {
		t.Fatal(err)
	}
	if r.Kind != oci.KindPlain || r.FileName != "junk.raw" {
		t.Fatalf("entry %+v", r.Entry)
	}
	dir := testenv.TempDirNoLeak(t, ".#")
	_, err = oci.Download(context.Background(), tg, &r.Entry, oci.DownloadOptions{Dir: dir})
	if err == nil || !strings.Contains(err.Error(), "the content is not a squashfs, EROFS or GPT image") {
		t.Fatalf("got %v", err)
	}
	t.Log(err)
	emptyDir(t, dir)
}

func TestRefusesUnsafeTitle(t *testing.T) {
	reg := ocitest.NewOlareg(t)
	tg, ref := reg.Open(t, "ext/evil:1")
	img, _ := os.ReadFile(ocitest.Squashfs(t, ocitest.Meta("evil", "1", "x86-64"), nil))
	for _, title := range []string{"../evil.raw", "a/b.raw", "/etc/evil.raw", "..", ".hidden.raw"} {
		pushRaw(t, tg, "1", img, oci.MediaTypeKairos, oci.MediaTypeKairos, map[string]string{oci.AnnotationTitle: title}, nil)
		_, err := oci.Resolve(context.Background(), tg, ref, "")
		if !errors.Is(err, oci.ErrNotExtension) || !strings.Contains(err.Error(), "title") {
			t.Fatalf("title %q: got %v", title, err)
		}
		t.Log(err)
	}
}

func TestManifestSizeLimit(t *testing.T) {
	reg := ocitest.NewOlareg(t)
	ref := reg.Reference(t, "ext/big:1")
	// Push with a plain oras-go client: ours refuses such manifests.
	repo, err := remote.NewRepository(reg.Host + "/ext/big")
	if err != nil {
		t.Fatal(err)
	}
	repo.PlainHTTP = true
	repo.MaxMetadataBytes = 16 << 20
	img, _ := os.ReadFile(ocitest.Squashfs(t, ocitest.Meta("big", "1", "x86-64"), nil))
	pushRaw(t, repo, "1", img, oci.MediaTypeKairos, "", nil, map[string]string{"padding": strings.Repeat("x", oci.MaxManifestSize)})
	tg, _ := reg.Open(t, "ext/big:1")
	_, err = oci.Resolve(context.Background(), tg, ref, "")
	if err == nil || !strings.Contains(err.Error(), "more than the 4194304 allowed") {
		t.Fatalf("got %v", err)
	}
	t.Log(err)
}

func TestKairosArtifact(t *testing.T) {
	reg := ocitest.NewOlareg(t)
	tg, ref := reg.Open(t, "ext/kairos:1")
	file := ocitest.Squashfs(t, ocitest.Meta("k", "1", "x86-64"), []byte("kairos"))
	img, _ := os.ReadFile(file)
	pushRaw(t, tg, "1", img, oci.MediaTypeKairos, oci.MediaTypeKairos, map[string]string{oci.AnnotationTitle: "k.raw"}, nil)
	r, err := oci.Resolve(context.Background(), tg, ref, "arm64") // a single foreign manifest serves any arch until checked
	if err != nil {
		t.Fatal(err)
	}
	if r.Kind != oci.KindKairos {
		t.Fatalf("kind %s", r.Kind)
	}
	dir := testenv.TempDirNoLeak(t, ".#")
	d, err := oci.Download(context.Background(), tg, &r.Entry, oci.DownloadOptions{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Base(d.Path) != "k.raw" || d.Info == nil || d.Info.Name != "k" {
		t.Fatalf("downloaded %+v", d)
	}
}

func TestRefusesAnnotationsThatLie(t *testing.T) {
	reg := ocitest.NewOlareg(t)
	tg, ref := reg.Open(t, "ext/liar:1")
	img, _ := os.ReadFile(ocitest.Squashfs(t, ocitest.Meta("liar", "1", "x86-64"), nil))
	ann := oci.Annotations(ocitest.Meta("liar", "1", "x86-64"))
	ann[oci.AnnotationID] = "fedora" // the image says _any
	pushRaw(t, tg, "1", img, oci.MediaTypeSquashfs, oci.ArtifactType, nil, ann)
	r, err := oci.Resolve(context.Background(), tg, ref, "")
	if err != nil {
		t.Fatal(err)
	}
	dir := testenv.TempDirNoLeak(t, ".#")
	_, err = oci.Download(context.Background(), tg, &r.Entry, oci.DownloadOptions{Dir: dir})
	if err == nil || !strings.Contains(err.Error(), "disagrees with the manifest annotations: ID") {
		t.Fatalf("got %v", err)
	}
	t.Log(err)
	emptyDir(t, dir)
}

// A manifest naming a base OS image (image-id) the image does not carry is
// refused after download like any other lying annotation; an image-id that
// is not os-release syntax is not trusted at all (ignored).
func TestRefusesImageAnnotationsThatLie(t *testing.T) {
	reg := ocitest.NewOlareg(t)
	img, _ := os.ReadFile(ocitest.Squashfs(t, ocitest.Meta("liar", "1", "x86-64"), nil))
	for _, tc := range []struct {
		tag, value, want string
	}{
		{"lie", "fedora-coreos", "IMAGE_ID is \"\" in the image and \"fedora-coreos\" in the manifest"},
		{"junk", "not\tvalid", ""},
	} {
		tg, ref := reg.Open(t, "ext/liar:"+tc.tag)
		ann := oci.Annotations(ocitest.Meta("liar", "1", "x86-64"))
		ann[oci.AnnotationImageID] = tc.value
		pushRaw(t, tg, tc.tag, img, oci.MediaTypeSquashfs, oci.ArtifactType, nil, ann)
		r, err := oci.Resolve(context.Background(), tg, ref, "")
		if err != nil {
			t.Fatal(err)
		}
		dir := testenv.TempDirNoLeak(t, ".#")
		_, err = oci.Download(context.Background(), tg, &r.Entry, oci.DownloadOptions{Dir: dir})
		if tc.want == "" {
			if err != nil {
				t.Fatalf("%s: %v", tc.tag, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Fatalf("%s: got %v", tc.tag, err)
		}
		emptyDir(t, dir)
	}
}

// basicAuth answers 401 unless the request carries user:pass.
func basicAuth(w http.ResponseWriter, r *http.Request, _ http.Handler) bool {
	if u, p, ok := r.BasicAuth(); ok && u == "user" && p == "pass" {
		return false
	}
	w.Header().Set("WWW-Authenticate", `Basic realm="test"`)
	w.WriteHeader(http.StatusUnauthorized)
	return true
}

func TestCredentials(t *testing.T) {
	home := t.TempDir()
	t.Setenv("DOCKER_CONFIG", filepath.Join(home, "docker"))
	t.Setenv("REGISTRY_AUTH_FILE", "")
	t.Setenv("XDG_RUNTIME_DIR", home)
	t.Setenv("HOME", home)
	reg := ocitest.NewOlareg(t, basicAuth)
	ref := reg.Reference(t, "ext/private:1")
	o := ocitest.TestOptions()
	o.Credentials = nil // the user's stores, i.e. $DOCKER_CONFIG
	ctx := context.Background()
	tg, err := oci.Open(ctx, ref, o)
	if err != nil {
		t.Fatal(err)
	}
	_, err = oci.Resolve(ctx, tg, ref, "")
	want := "run 'sysext login " + reg.Host + " -u USER --password-stdin'"
	if err == nil || !strings.Contains(err.Error(), "none are stored") || !strings.Contains(err.Error(), want) {
		t.Fatalf("got %v", err)
	}
	t.Log(err)
	if err := oci.Login(ctx, reg.Host, "user", "wrong", o); err == nil {
		t.Fatal("login with a wrong password succeeded")
	}
	if err := oci.Login(ctx, reg.Host, "user", "pass", o); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(home, "docker", "config.json")); err != nil || !strings.Contains(string(b), reg.Host) {
		t.Fatalf("config.json: %s %v", b, err)
	}
	tg, _ = oci.Open(ctx, ref, o)
	file := ocitest.Squashfs(t, ocitest.Meta("private", "1", "x86-64"), nil)
	if _, err := oci.Push(ctx, tg, ref, []string{file}, oci.PushOptions{}); err != nil {
		t.Fatalf("push after login: %v", err)
	}
	if err := oci.Logout(ctx, reg.Host); err != nil {
		t.Fatal(err)
	}
	tg, _ = oci.Open(ctx, ref, o)
	if _, err := oci.Resolve(ctx, tg, ref, ""); err == nil || !strings.Contains(err.Error(), "sysext login") {
		t.Fatalf("after logout: %v", err)
	}
}
