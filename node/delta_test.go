package node

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/sysext/sysext/builder"
	"github.com/sysext/sysext/delta"
	"github.com/sysext/sysext/extension"
	"github.com/sysext/sysext/internal/testenv"
	"github.com/sysext/sysext/oci"
	"github.com/sysext/sysext/oci/ocitest"
	"github.com/sysext/sysext/store"
	"github.com/sysext/sysext/verify"
	"github.com/sysext/sysext/verify/verifytest"
)

// The delta download tests build extensions whose files are chosen
// random bytes (so a file's chunks are its own, and a changed file costs
// its size), with the product's builder (squashfs zstd), push them with
// their chunk index to the real distribution registry behind a counting
// proxy (or to an OCI layout), and count what the registry sends.

// blob is n reproducible random bytes.
func blob(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, 99))
	b := make([]byte, n)
	for i := 0; i+8 <= n; i += 8 {
		v := r.Uint64()
		for j := range 8 {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	return b
}

// extImage builds extension NAME VERSION holding files (path under usr/
// → content) and returns the image file.
func extImage(t testing.TB, name, version string, files map[string][]byte) string {
	t.Helper()
	testenv.RequireTool(t, "mksquashfs")
	tree := filepath.Join(t.TempDir(), "tree")
	for p, b := range files {
		must(t, os.MkdirAll(filepath.Join(tree, "usr", filepath.Dir(p)), 0o755))
		must(t, os.WriteFile(filepath.Join(tree, "usr", p), b, 0o644))
	}
	out := filepath.Join(t.TempDir(), extension.FileName(name, version, extension.HostArch()))
	_, err := builder.Build(context.Background(), builder.Options{
		Tree: tree, Meta: meta(name, version), Output: out, SourceDateEpoch: 1700000000,
	})
	must(t, err)
	return out
}

// deltaReg is the distribution registry behind a proxy that counts the
// blob bytes it sends and may misbehave (after on is set).
type deltaReg struct {
	*ocitest.Registry
	served ocitest.Served
	mu     sync.Mutex
	fault  ocitest.Fault
}

func newDeltaReg(t *testing.T) *deltaReg {
	d := &deltaReg{}
	d.Registry = ocitest.Proxy(t, ocitest.StartDistribution(t), d.served.Fault(), func(w http.ResponseWriter, r *http.Request, next http.Handler) bool {
		d.mu.Lock()
		f := d.fault
		d.mu.Unlock()
		return f != nil && f(w, r, next)
	})
	return d
}

// misbehave sets the fault from now on and starts counting again.
func (d *deltaReg) misbehave(f ocitest.Fault) {
	d.mu.Lock()
	d.fault = f
	d.mu.Unlock()
	d.served.Reset()
}

// logNode is testNode with its log kept.
func logNode(root string, log *bytes.Buffer) *Node {
	o := testNode(root).opts
	o.Log = log
	return New(o)
}

// checkActive checks that NAME's active image is the file want, byte for
// byte, and that no partial download is left.
func checkActive(t *testing.T, root, name, want string) {
	t.Helper()
	// The link is absolute on the node: resolve it under root.
	target, err := os.Readlink(filepath.Join(root, "var/lib/extensions", name+".raw"))
	must(t, err)
	got, err := os.ReadFile(filepath.Join(root, target))
	must(t, err)
	w, err := os.ReadFile(want)
	must(t, err)
	if !bytes.Equal(got, w) {
		t.Fatalf("the active %s is not %s byte for byte", name, filepath.Base(want))
	}
	if d := ingestDirs(t, root); len(d) != 0 {
		t.Fatalf("partial downloads left: %v", d)
	}
}

func size(t testing.TB, p string) int64 {
	fi, err := os.Stat(p)
	must(t, err)
	return fi.Size()
}

// An update where one file changed, one was added and one removed fetches
// about what changed and takes the rest from the stored version; a
// version-only update fetches almost nothing; an unrelated image is
// downloaded whole, never much more. Against the real distribution
// registry (what it sends is counted by a proxy in front of it) and an OCI
// layout (what the node reports it read).
func TestDeltaUpdate(t *testing.T) {
	reg := newDeltaReg(t)
	layout := oci.LayoutScheme + filepath.Join(t.TempDir(), "layout")
	for _, src := range []struct {
		name string
		ref  string
		// sent is what the store gave for the last update, or -1 when
		// only the node's own count is known.
		sent  func() int64
		reset func()
	}{
		{"distribution", reg.Ref("ext/app:stable"), reg.served.Bytes, func() { reg.misbehave(nil) }},
		{"layout", layout + ":stable", func() int64 { return -1 }, func() {}},
	} {
		t.Run(src.name, func(t *testing.T) { testDeltaUpdate(t, src.ref, src.sent, src.reset) })
	}
}

func testDeltaUpdate(t *testing.T, ref string, served func() int64, reset func()) {
	shared, changed, removed := blob(6<<20, 1), blob(1<<20, 2), blob(512<<10, 3)
	newChanged, added := blob(1<<20, 4), blob(768<<10, 5)
	v1 := extImage(t, "app", "1.0", map[string][]byte{"lib/app/shared": shared, "lib/app/changed": changed, "lib/app/removed": removed, "bin/app": []byte("#!/bin/sh\necho 1\n")})
	v2 := extImage(t, "app", "2.0", map[string][]byte{"lib/app/shared": shared, "lib/app/changed": newChanged, "lib/app/added": added, "bin/app": []byte("#!/bin/sh\necho 2\n")})
	v2b := extImage(t, "app", "2.0.1", map[string][]byte{"lib/app/shared": shared, "lib/app/changed": newChanged, "lib/app/added": added, "bin/app": []byte("#!/bin/sh\necho 2\n")})
	v3 := extImage(t, "app", "3.0", map[string][]byte{"lib/app/other": blob(4<<20, 6)})
	push(t, ref, v1)
	root := nodeRoot(t, debianRelease)
	ctx := context.Background()
	var log bytes.Buffer
	n := logNode(root, &log)
	if _, err := n.Pull(ctx, PullRequest{Ref: ref}); err != nil {
		t.Fatal(err)
	}
	// A full download of each version on a node that holds nothing, to
	// compare with.
	fullRoot := nodeRoot(t, debianRelease)
	o := testNode(fullRoot).opts
	o.NoDelta = true
	full := New(o)

	type step struct {
		name     string
		file     string
		min, max int64 // bytes the store may send for the image
	}
	idx := func(p string) int64 {
		_, b, err := oci.ChunkIndexFile(ctx, p)
		must(t, err)
		return int64(len(b))
	}
	changedBytes := int64(len(newChanged) + len(added))
	for _, s := range []step{
		{"changed, added, removed", v2, changedBytes, changedBytes + 4*delta.MaxSize + idx(v2)},
		{"version only", v2b, 1, 3*delta.MaxSize + idx(v2b)},
		{"unrelated", v3, size(t, v3), size(t, v3) + idx(v3) + delta.MaxSize},
	} {
		t.Run(s.name, func(t *testing.T) {
			push(t, ref, s.file)
			reset()
			log.Reset()
			rs, err := n.Update(ctx, UpdateOptions{All: true})
			if err != nil || len(rs) != 1 || rs[0].Action != "updated" {
				t.Fatalf("update: %+v %v\n%s", rs, err, log.String())
			}
			r := rs[0]
			checkActive(t, root, "app", s.file)
			sent := served()
			if sent < 0 {
				sent = r.Downloaded
			}
			t.Logf("image %d bytes: the store sent %d (%.1f%%), reported downloaded %d, reused %d; %s",
				size(t, s.file), sent, 100*float64(sent)/float64(size(t, s.file)), r.Downloaded, r.Reused, strings.TrimSpace(log.String()))
			if sent < s.min || sent > s.max {
				t.Fatalf("the store sent %d bytes, want %d to %d", sent, s.min, s.max)
			}
			// What the result reports is what was sent, plus the referrer
			// manifest (not a blob).
			if r.Downloaded < sent || r.Downloaded > sent+4096 {
				t.Fatalf("reported %d bytes downloaded, the store sent %d blob bytes", r.Downloaded, sent)
			}
			if s.name != "unrelated" && r.Reused+sent < size(t, s.file) {
				t.Fatalf("reused %d + sent %d < %d", r.Reused, sent, size(t, s.file))
			}
			if s.name == "unrelated" && !strings.Contains(log.String(), "downloading the whole image") {
				t.Fatalf("no line says the whole image is downloaded:\n%s", log.String())
			}
			// The same file, byte for byte, as a full download.
			if _, err := full.Pull(ctx, PullRequest{Ref: ref}); err != nil {
				t.Fatal(err)
			}
			sameActive(t, root, fullRoot, "app")
		})
	}
	// The stored images keep their chunk indexes (made once, or kept from
	// the download), and nothing else is left in the store.
	files, err := filepath.Glob(filepath.Join(root, "var/lib/sysext/store/app/.*"))
	must(t, err)
	for _, f := range files {
		if !strings.HasSuffix(f, ".raw.chunks") {
			t.Errorf("left in the store: %s", f)
		}
	}
	if len(files) < 3 {
		t.Errorf("chunk indexes kept: %v", files)
	}
}

// sameActive checks that NAME's active image is the same file, byte for
// byte, on two nodes.
func sameActive(t *testing.T, rootA, rootB, name string) {
	t.Helper()
	read := func(root string) []byte {
		target, err := os.Readlink(filepath.Join(root, "var/lib/extensions", name+".raw"))
		must(t, err)
		b, err := os.ReadFile(filepath.Join(root, target))
		must(t, err)
		return b
	}
	if !bytes.Equal(read(rootA), read(rootB)) {
		t.Fatalf("the delta's %s differs from the full download's", name)
	}
}

// A store that holds another extension with the same file serves it to a
// first install.
func TestDeltaFromAnotherExtension(t *testing.T) {
	reg := newDeltaReg(t)
	shared := blob(4<<20, 7)
	other := extImage(t, "tools", "1", map[string][]byte{"bin/tool": shared})
	app := extImage(t, "app", "1", map[string][]byte{"bin/tool": shared, "lib/app/own": blob(512<<10, 8)})
	push(t, reg.Ref("ext/tools:1"), other)
	push(t, reg.Ref("ext/app:1"), app)
	root := nodeRoot(t, debianRelease)
	n := testNode(root)
	ctx := context.Background()
	if _, err := n.Pull(ctx, PullRequest{Ref: reg.Ref("ext/tools:1")}); err != nil {
		t.Fatal(err)
	}
	reg.misbehave(nil)
	r, err := n.Pull(ctx, PullRequest{Ref: reg.Ref("ext/app:1")})
	if err != nil {
		t.Fatal(err)
	}
	checkActive(t, root, "app", app)
	reg.served.Settle()
	if sent := reg.served.Bytes(); sent > size(t, app)/2 || r.Reused < int64(len(shared))-2*delta.MaxSize {
		t.Fatalf("first install next to a shared file: sent %d of %d, reused %d", sent, size(t, app), r.Reused)
	}
}

// deltaFixture is a node holding v1 of "app" from reg, with v2 (a large
// changed file) pushed behind the tag.
type deltaFixture struct {
	reg      *deltaReg
	ref      string
	root     string
	v1, v2   string
	v2Layer  int64
	changedN int
}

func newDeltaFixture(t *testing.T, changed int) *deltaFixture {
	reg := newDeltaReg(t)
	shared := blob(4<<20, 11)
	v1 := extImage(t, "app", "1", map[string][]byte{"lib/shared": shared, "lib/changed": blob(changed, 12)})
	v2 := extImage(t, "app", "2", map[string][]byte{"lib/shared": shared, "lib/changed": blob(changed, 13)})
	ref := reg.Ref("ext/app:stable")
	push(t, ref, v1)
	root := nodeRoot(t, debianRelease)
	if _, err := testNode(root).Pull(context.Background(), PullRequest{Ref: ref}); err != nil {
		t.Fatal(err)
	}
	push(t, ref, v2)
	return &deltaFixture{reg: reg, ref: ref, root: root, v1: v1, v2: v2, v2Layer: size(t, v2), changedN: changed}
}

// Every failure of the delta path falls back to the whole image, says so
// in one line, and leaves nothing behind; the cuts, 429 and 5xx answers
// the full download survives, the delta path survives too.
func TestDeltaFaults(t *testing.T) {
	for _, tc := range []struct {
		name     string
		fault    ocitest.Fault
		fallback string // the line that says the delta was given up; "" = it was not
	}{
		{"a chunk that does not match", ocitest.CorruptRange(1), "does not match its digest"},
		{"a registry that ignores Range", ocitest.IgnoreRange(-1), "does not serve byte ranges"},
		{"cuts beyond the retries", ocitest.CutBlobRanged(32<<10, -1), "still failing at"},
		{"cuts", ocitest.CutBlobRanged(100<<10, 3), ""},
		{"429", ocitest.FailStatus(http.StatusTooManyRequests, 2, ocitest.Blobs), ""},
		{"503", ocitest.FailStatus(http.StatusServiceUnavailable, 2, ocitest.Blobs), ""},
		// The referrers API and the fallback tag are asked at once: the
		// tag alone finds the index, and both failing is one line.
		{"a referrers API that fails", ocitest.FailStatus(http.StatusInternalServerError, -1, referrersAPI), ""},
		{"a referrers query that fails", ocitest.FailStatus(http.StatusInternalServerError, -1, func(r *http.Request) bool {
			return referrersAPI(r) || referrersTag(r)
		}), "list referrers"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newDeltaFixture(t, 2<<20)
			f.reg.misbehave(tc.fault)
			var log bytes.Buffer
			r, err := logNode(f.root, &log).Pull(context.Background(), PullRequest{Ref: f.ref})
			if err != nil {
				t.Fatalf("%v\n%s", err, log.String())
			}
			if r.Action != "updated" {
				t.Fatalf("%+v", r)
			}
			checkActive(t, f.root, "app", f.v2)
			lines := 0
			for _, l := range strings.Split(log.String(), "\n") {
				if strings.Contains(l, "downloading the whole image") {
					lines++
					if tc.fallback == "" || !strings.Contains(l, tc.fallback) {
						t.Errorf("fallback line: %s", l)
					}
				}
			}
			if want := map[bool]int{true: 1, false: 0}[tc.fallback != ""]; lines != want {
				t.Fatalf("%d lines say the whole image is downloaded, want %d:\n%s", lines, want, log.String())
			}
			if tc.fallback == "" && r.Reused == 0 {
				t.Fatalf("the delta path was not taken: %+v\n%s", r, log.String())
			}
			t.Logf("sent %d bytes of %d; %s", f.reg.served.Bytes(), f.v2Layer, strings.TrimSpace(log.String()))
		})
	}
}

// referrersAPI matches the OCI 1.1 referrers API's requests.
func referrersAPI(r *http.Request) bool { return strings.Contains(r.URL.Path, "/referrers/") }

// referrersTag matches the requests for a fallback tag (sha256-<hex>).
func referrersTag(r *http.Request) bool {
	return strings.Contains(r.URL.Path, "/manifests/sha256-")
}

// A registry serving wrong bytes for the whole image: the delta refuses
// the chunk, the full download refuses the digest; the pull fails, the
// active image stays, nothing is left behind.
func TestDeltaWrongDigest(t *testing.T) {
	f := newDeltaFixture(t, 1<<20)
	f.reg.misbehave(func(w http.ResponseWriter, r *http.Request, next http.Handler) bool {
		return ocitest.CorruptRange(-1)(w, r, next) || ocitest.CorruptBlob(-1)(w, r, next)
	})
	_, err := testNode(f.root).Pull(context.Background(), PullRequest{Ref: f.ref})
	if err == nil || !strings.Contains(err.Error(), "do not match the digest") {
		t.Fatalf("got %v", err)
	}
	checkActive(t, f.root, "app", f.v1)
}

// --no-delta downloads the whole image and asks for no chunk index.
func TestNoDelta(t *testing.T) {
	f := newDeltaFixture(t, 1<<20)
	var referrers int
	var mu sync.Mutex
	f.reg.misbehave(func(w http.ResponseWriter, r *http.Request, next http.Handler) bool {
		if strings.Contains(r.URL.Path, "/referrers/") || strings.Contains(r.URL.Path, "/manifests/sha256-") {
			mu.Lock()
			referrers++
			mu.Unlock()
		}
		return false
	})
	o := testNode(f.root).opts
	o.NoDelta = true
	r, err := New(o).Pull(context.Background(), PullRequest{Ref: f.ref})
	if err != nil {
		t.Fatal(err)
	}
	checkActive(t, f.root, "app", f.v2)
	f.reg.served.Settle()
	if f.reg.served.Bytes() != f.v2Layer || r.Reused != 0 || r.Downloaded != f.v2Layer || referrers != 0 {
		t.Fatalf("--no-delta: sent %d of %d, reused %d, downloaded %d, %d referrer requests", f.reg.served.Bytes(), f.v2Layer, r.Reused, r.Downloaded, referrers)
	}
}

// A stored image damaged after its chunk index was kept: its chunks do
// not match, the delta is given up (and the kept index dropped), the
// whole image comes instead.
func TestDeltaDamagedStoredImage(t *testing.T) {
	f := newDeltaFixture(t, 1<<20)
	ctx := context.Background()
	// The first pull kept v1's published chunk index (made again here,
	// as a delta run would); then v1's stored bytes change under it.
	cache, err := filepath.Glob(filepath.Join(f.root, "var/lib/sysext/store/app/.app-1-*.raw.chunks"))
	must(t, err)
	if len(cache) != 1 {
		t.Fatalf("v1's published index is not kept: %v", cache)
	}
	stored := filepath.Join(f.root, "var/lib/sysext/store/app", extension.FileName("app", "1", extension.HostArch()))
	ix, b, err := oci.ChunkIndexFile(ctx, stored)
	must(t, err)
	must(t, os.WriteFile(filepath.Join(filepath.Dir(stored), "."+filepath.Base(stored)+".chunks"), b, 0o444))
	must(t, os.Chmod(stored, 0o644))
	fh, err := os.OpenFile(stored, os.O_WRONLY, 0)
	must(t, err)
	_, err = fh.WriteAt([]byte("damage"), ix.Chunks[len(ix.Chunks)/2].Off+100)
	must(t, err)
	must(t, fh.Close())
	var log bytes.Buffer
	f.reg.misbehave(nil)
	if _, err := logNode(f.root, &log).Pull(ctx, PullRequest{Ref: f.ref}); err != nil {
		t.Fatal(err)
	}
	checkActive(t, f.root, "app", f.v2)
	if !strings.Contains(log.String(), "stored image or its index is damaged") {
		t.Fatalf("log:\n%s", log.String())
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(stored), "."+filepath.Base(stored)+".chunks")); !os.IsNotExist(err) {
		t.Fatalf("the damaged image's index is still kept: %v", err)
	}
}

// Delta downloads from an OCI layout and from the distribution registry,
// and from copies made by `sysext copy` (oci.Copy): layout to layout,
// distribution (the fallback tag) to olareg (the referrers API) and to a
// layout. The chunk index travels with the copy.
func TestDeltaFromCopies(t *testing.T) {
	ctx := context.Background()
	shared := blob(4<<20, 21)
	v1 := extImage(t, "app", "1", map[string][]byte{"lib/shared": shared, "lib/own": blob(256<<10, 22)})
	v2 := extImage(t, "app", "2", map[string][]byte{"lib/shared": shared, "lib/own": blob(256<<10, 23)})
	dir := t.TempDir()
	layout := oci.LayoutScheme + filepath.Join(dir, "layout")
	dist := ocitest.StartDistribution(t).Ref("ext/app")
	for _, src := range []string{layout, dist} {
		push(t, src+":1", v1)
		push(t, src+":2", v2)
	}
	copyTo := func(from, to string) {
		for _, tag := range []string{"1", "2"} {
			src, err := oci.ParseReference(from + ":" + tag)
			must(t, err)
			dst, err := oci.ParseReference(to + ":" + tag)
			must(t, err)
			st, err := oci.Open(ctx, src, ocitest.TestOptions())
			must(t, err)
			o := ocitest.TestOptions()
			o.CreateLayout = true
			dt, err := oci.Open(ctx, dst, o)
			must(t, err)
			if _, err := oci.Copy(ctx, st, src, dt, dst, oci.CopyOptions{}); err != nil {
				t.Fatal(err)
			}
		}
	}
	copiedLayout := oci.LayoutScheme + filepath.Join(dir, "copied")
	copyTo(layout, copiedLayout)
	mirror := ocitest.NewOlareg(t).Ref("mirror/app")
	copyTo(dist, mirror)
	mirrorLayout := oci.LayoutScheme + filepath.Join(dir, "mirrored")
	copyTo(dist, mirrorLayout)
	for name, from := range map[string]string{
		"layout": layout, "layout copied": copiedLayout, "distribution": dist,
		"olareg mirror of distribution": mirror, "layout copied from distribution": mirrorLayout,
	} {
		t.Run(name, func(t *testing.T) {
			root := nodeRoot(t, debianRelease)
			n := testNode(root)
			if _, err := n.Pull(ctx, PullRequest{Ref: from + ":1"}); err != nil {
				t.Fatal(err)
			}
			r, err := n.Pull(ctx, PullRequest{Ref: from + ":2"})
			if err != nil {
				t.Fatal(err)
			}
			checkActive(t, root, "app", v2)
			if r.Reused < int64(len(shared))-2*delta.MaxSize || r.Downloaded > size(t, v2)/2 {
				t.Fatalf("%s: reused %d, downloaded %d of %d", from, r.Reused, r.Downloaded, size(t, v2))
			}
		})
	}
}

const (
	envDeltaKillRoot = "SYSEXT_DELTA_KILL_ROOT"
	envDeltaKillRef  = "SYSEXT_DELTA_KILL_REF"
)

// TestDeltaKillChild pulls as a delta and SIGKILLs itself once half of
// what it fetches is written; it runs only as TestDeltaResumesAfterKill's
// child.
func TestDeltaKillChild(t *testing.T) {
	root := os.Getenv(envDeltaKillRoot)
	if root == "" {
		t.Skip("only run as TestDeltaResumesAfterKill's child")
	}
	o := testNode(root).opts
	o.Progress = func(done, total int64) {
		if done >= total/2 {
			syscall.Kill(os.Getpid(), syscall.SIGKILL)
			select {}
		}
	}
	if _, err := New(o).Pull(context.Background(), PullRequest{Ref: os.Getenv(envDeltaKillRef)}); err != nil {
		t.Fatal(err)
	}
	t.Fatal("the pull finished: it was to be killed half-way")
}

// A delta download SIGKILLed half-way: the active image is intact, no
// temp file is left, and the next pull goes on from the chunks the killed
// one wrote (they are not fetched again) and leaves nothing behind.
func TestDeltaResumesAfterKill(t *testing.T) {
	if testing.Short() {
		t.Skip("a child process")
	}
	f := newDeltaFixture(t, 24<<20)
	f.reg.misbehave(nil)
	cmd := exec.Command(os.Args[0], "-test.run=^TestDeltaKillChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), envDeltaKillRoot+"="+f.root, envDeltaKillRef+"="+f.ref)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("the child was not killed: %v\n%s", err, out)
	}
	f.reg.served.Settle()
	first := f.reg.served.Bytes()
	checkApp(t, f.root, "delta killed half-way", "1")
	if len(ingestDirs(t, f.root)) != 1 {
		t.Fatal("the killed delta left no partial download to resume")
	}

	f.reg.misbehave(nil)
	var log bytes.Buffer
	r, err := logNode(f.root, &log).Pull(context.Background(), PullRequest{Ref: f.ref})
	if err != nil {
		t.Fatal(err)
	}
	checkActive(t, f.root, "app", f.v2)
	f.reg.served.Settle()
	again := f.reg.served.Bytes()
	t.Logf("image %d bytes, changed file %d: the killed run was sent %d, the rerun %d; %s", f.v2Layer, f.changedN, first, again, strings.TrimSpace(log.String()))
	if !strings.Contains(log.String(), "from the interrupted download") {
		t.Fatalf("the rerun did not go on from the killed one:\n%s", log.String())
	}
	// The rerun fetches what the killed run had not written: together
	// about the changed file once, not one and a half times.
	if again > int64(f.changedN)*3/4 || first+again > int64(f.changedN)+8*delta.MaxSize+(32<<20) {
		t.Fatalf("the killed run was sent %d bytes and the rerun %d, for a changed file of %d", first, again, f.changedN)
	}
	if r.Reused <= int64(4<<20) {
		t.Fatalf("the rerun reused %d bytes", r.Reused)
	}
	checkApp(t, f.root, "rerun", "2")
}

// checkApp opens the store (which recovers) and checks that "app" VERSION
// is active, its image intact, and no temp file is left.
func checkApp(t *testing.T, root, what, version string) {
	t.Helper()
	s, err := store.Open(context.Background(), storeOpts(root))
	must(t, err)
	defer s.Close()
	e, ok := s.Entry("app")
	if !ok || e.Active.Version != version || e.Pending != nil || !s.LinkTargetIs("app", e.Active.File) {
		t.Fatalf("%s: app %+v, want %s active", what, e, version)
	}
	if got := fileSHA(t, s.ImagePath("app", e.Active.File)); got != e.Active.LayerDigest.Encoded() {
		t.Fatalf("%s: the active image is damaged", what)
	}
	filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err == nil && strings.HasPrefix(fi.Name(), ".#") {
			t.Fatalf("%s: temp file %s left", what, p)
		}
		return nil
	})
}

// otherFirst is a node holding app 1 whose tag now points to an index
// listing, without platforms, another architecture's build of app 2 first
// and the host's second: what the node looks for early, from the index's
// first entry, is for a manifest it does not resolve (only the manifest
// tells the architecture).
type otherFirst struct {
	reg         *deltaReg
	ref, root   string
	v2          string
	other, ours ocispec.Descriptor
}

func newOtherFirst(t *testing.T) *otherFirst {
	reg := newDeltaReg(t)
	ctx := context.Background()
	shared := blob(4<<20, 21)
	v1 := extImage(t, "app", "1", map[string][]byte{"lib/shared": shared, "lib/changed": blob(1<<20, 22)})
	v2 := extImage(t, "app", "2", map[string][]byte{"lib/shared": shared, "lib/changed": blob(1<<20, 23)})
	// The same tree built for another architecture: its own chunk index.
	other := filepath.Join(t.TempDir(), extension.FileName("app", "2", ocitest.OtherArch()))
	tree := filepath.Join(t.TempDir(), "tree")
	must(t, os.MkdirAll(filepath.Join(tree, "usr/lib"), 0o755))
	must(t, os.WriteFile(filepath.Join(tree, "usr/lib/shared"), shared, 0o644))
	m := meta("app", "2")
	m.Arch = ocitest.OtherArch()
	_, err := builder.Build(ctx, builder.Options{Tree: tree, Meta: m, Output: other, SourceDateEpoch: 1700000000})
	must(t, err)
	f := &otherFirst{reg: reg, ref: reg.Ref("ext/app:stable"), root: nodeRoot(t, debianRelease), v2: v2}
	push(t, f.ref, v1)
	if _, err := testNode(f.root).Pull(ctx, PullRequest{Ref: f.ref}); err != nil {
		t.Fatal(err)
	}
	entry := func(tag, file string, arch extension.Arch) ocispec.Descriptor {
		push(t, reg.Ref("ext/app:"+tag), file)
		tg, r := reg.Open(t, "ext/app:"+tag)
		res, err := oci.Resolve(ctx, tg, r, arch)
		must(t, err)
		d := res.Descriptor
		d.Platform = nil
		return d
	}
	f.other, f.ours = entry("other", other, ocitest.OtherArch()), entry("v2", v2, extension.HostArch())
	tg, _ := reg.Open(t, "ext/app:stable")
	ocitest.Index(t, tg, "stable", []ocispec.Descriptor{f.other, f.ours})
	return f
}

// noEarlyLeft fails when a goroutine is still inside a lookup or check
// the pull started early.
func noEarlyLeft(t *testing.T) {
	t.Helper()
	buf := make([]byte, 1<<20)
	stacks := string(buf[:runtime.Stack(buf, true)])
	for _, fn := range []string{"oci.listChunkIndexReferrers", "oci.chunkIndexReferrersByTag", "oci.readChunkIndex", "oci.findChunkIndex", "node.(*Node).startVerify"} {
		if strings.Contains(stacks, fn) {
			t.Fatalf("a goroutine is still in %s after the update:\n%s", fn, stacks)
		}
	}
}

// The chunk index is looked for from the index's first entry while its
// manifest is read. When the manifest resolved is another, that lookup is
// stopped, even hung, and nothing it found is used: the update looks again
// for the manifest resolved and still takes the delta path.
func TestDeltaEarlyLookupOtherManifest(t *testing.T) {
	f := newOtherFirst(t)
	// The other build's chunk index lookups hang until cancelled.
	arrived, ended := make(chan string, 8), make(chan string, 8)
	f.reg.misbehave(func(w http.ResponseWriter, r *http.Request, _ http.Handler) bool {
		if !strings.Contains(r.URL.Path, f.other.Digest.Encoded()) || !(referrersAPI(r) || referrersTag(r)) {
			return false
		}
		arrived <- r.URL.Path
		<-r.Context().Done()
		ended <- r.URL.Path
		return true
	})
	var log bytes.Buffer
	rs, err := logNode(f.root, &log).Update(context.Background(), UpdateOptions{All: true})
	if err != nil || len(rs) != 1 || rs[0].Action != "updated" {
		t.Fatalf("update: %+v %v\n%s", rs, err, log.String())
	}
	checkActive(t, f.root, "app", f.v2)
	if rs[0].Reused == 0 || strings.Contains(log.String(), "whole image") {
		t.Fatalf("the delta path was not taken: %+v\n%s", rs[0], log.String())
	}
	if len(arrived) == 0 {
		t.Fatal("no chunk index lookup was started for the index's first entry: the test shows nothing")
	}
	for range len(arrived) {
		select {
		case <-ended:
		case <-time.After(30 * time.Second):
			t.Fatal("a hung lookup for the other manifest was never cancelled")
		}
	}
	noEarlyLeft(t)
}

// verifyOnly accepts the manifest ours only; a check of any other waits
// until it is cancelled (a registry that hangs) and is recorded.
type verifyOnly struct {
	ours      digest.Digest
	mu        sync.Mutex
	cancelled []digest.Digest
}

func (v *verifyOnly) Verify(ctx context.Context, _ oci.Target, _ oci.Reference, r *oci.Resolved, _ Trust) (verify.Verified, error) {
	if r.Descriptor.Digest == v.ours {
		return verifytest.AcceptUnsigned(r.Descriptor.Digest), nil
	}
	<-ctx.Done()
	v.mu.Lock()
	v.cancelled = append(v.cancelled, r.Descriptor.Digest)
	v.mu.Unlock()
	return verify.Verified{}, errors.New("not signed")
}

// The signatures are checked from the index's first entry while its
// manifest is read. When the manifest resolved is another, that check is
// stopped (here it hangs) and its answer is not used: the manifest
// resolved is checked itself.
func TestEarlyVerifyOtherManifest(t *testing.T) {
	f := newOtherFirst(t)
	v := &verifyOnly{ours: f.ours.Digest}
	o := testNode(f.root).opts
	o.Verifier = v
	var log bytes.Buffer
	o.Log = &log
	rs, err := New(o).Update(context.Background(), UpdateOptions{All: true})
	if err != nil || len(rs) != 1 || rs[0].Action != "updated" {
		t.Fatalf("update: %+v %v\n%s", rs, err, log.String())
	}
	checkActive(t, f.root, "app", f.v2)
	v.mu.Lock()
	defer v.mu.Unlock()
	if len(v.cancelled) != 1 || v.cancelled[0] != f.other.Digest {
		t.Fatalf("checks cancelled: %v, want the one started for %s", v.cancelled, f.other.Digest)
	}
	noEarlyLeft(t)
}
