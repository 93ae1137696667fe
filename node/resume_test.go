package node

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/sysext/sysext/oci/ocitest"
	"github.com/sysext/sysext/store"
	"github.com/sysext/sysext/verify"
)

const (
	envResumeRoot = "SYSEXT_RESUME_ROOT"
	envResumeRef  = "SYSEXT_RESUME_REF"
	envResumeCut  = "SYSEXT_RESUME_CUT" // file the child writes its last progress to
)

// TestResumeChild pulls and SIGKILLs itself once half the image is written;
// it runs only as TestPullResumesAfterKill's child.
func TestResumeChild(t *testing.T) {
	root := os.Getenv(envResumeRoot)
	if root == "" {
		t.Skip("only run as TestPullResumesAfterKill's child")
	}
	o := testNode(root).opts
	o.Progress = func(done, total int64) {
		if done >= total/2 {
			// The parent learns where the cut was; then die as a killed
			// process dies: nothing after this runs.
			os.WriteFile(os.Getenv(envResumeCut), []byte(strconv.FormatInt(done, 10)), 0o644)
			syscall.Kill(os.Getpid(), syscall.SIGKILL)
			select {}
		}
	}
	if _, err := New(o).Pull(context.Background(), PullRequest{Ref: os.Getenv(envResumeRef)}); err != nil {
		t.Fatal(err)
	}
	t.Fatal("the pull finished: it was to be killed half-way")
}

// TestPullResumesAfterKill: a pull SIGKILLed at 50% of a large image and
// run again does not download the bytes before the cut again. The registry
// handler counts what it sends: the rerun asks for one Range, from the
// cut on, and is sent exactly the rest of the image.
func TestPullResumesAfterKill(t *testing.T) {
	if testing.Short() {
		t.Skip("a large image and a child process")
	}
	var served ocitest.Served
	reg := ocitest.NewOlareg(t, served.Fault())
	img := makeImage(t, meta("crash", "1"), 96<<20) // checkNode looks at "crash"
	ref := reg.Ref("ext/crash:1")
	ixSize := chunkIndexBlobSize(t, push(t, ref, img))
	fi, err := os.Stat(img)
	must(t, err)
	size := fi.Size()
	root := nodeRoot(t, debianRelease)

	served.Reset()
	cut := killedPull(t, root, ref)
	served.Settle() // the killed child's request may still be answered
	first := served.Bytes()
	checkNode(t, root, "killed at 50%", []string{""})

	served.Reset()
	r, err := testNode(root).Pull(context.Background(), PullRequest{Ref: ref})
	if err != nil {
		t.Fatal(err)
	}
	if r.Version != "1" || r.Action != "pulled" {
		t.Fatalf("rerun: %+v", r)
	}
	if v := checkNode(t, root, "rerun", []string{"1"}); v != "1" {
		t.Fatalf("after the rerun %q is active", v)
	}
	served.Settle()
	again := served.Bytes()
	t.Logf("image %d bytes; killed at %d (%.1f%%) after the registry sent %d; the rerun was sent %d (%d after the cut); ranges %q",
		size, cut, 100*float64(cut)/float64(size), first, again, size-cut, served.Ranges())
	// The writes in flight when the hook fired (several go to the disk
	// at once) may have become durable before the kill landed: the rerun
	// starts at the cut or a little after it, never before.
	rs := served.Ranges()
	var from, to int64
	if len(rs) != 1 {
		t.Fatalf("the rerun asked for %q, want one range from the cut at %d", rs, cut)
	}
	if _, err := fmt.Sscanf(rs[0], "bytes=%d-%d", &from, &to); err != nil || to != size-1 || from < cut || from > cut+32<<20 {
		t.Fatalf("the rerun asked for %q, want one range to the end from the cut at %d (or up to 32 MiB after it)", rs, cut)
	}
	// The chunk index, looked for beside the download to be kept, may
	// come too.
	if cut < size/2 || again != size-from && again != size-from+ixSize {
		t.Fatalf("the rerun was sent %d bytes for the %d after %d (and maybe its %d-byte chunk index)", again, size-from, from, ixSize)
	}
	for _, d := range ingestDirs(t, root) {
		t.Fatalf("ingest %s left after the rerun", d)
	}
}

// ingestDirs lists the store's partial downloads under root.
func ingestDirs(t *testing.T, root string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(root, "var/lib/sysext/store/*/.ingest-*"))
	must(t, err)
	return m
}

// countingInstaller records the calls a pull makes into the store on its
// way from the decision to download to the link switch: the Installer's
// two, and Commit through the store's hook.
type countingInstaller struct {
	*store.Store
	calls *[]string
}

func (c countingInstaller) Ingest(ctx context.Context, name string, want ocispec.Descriptor) (*store.Ingest, error) {
	*c.calls = append(*c.calls, "Ingest")
	return c.Store.Ingest(ctx, name, want)
}

func (c countingInstaller) Install(v verify.Verified, name string, in store.Install, meta store.Meta) error {
	*c.calls = append(*c.calls, "Install")
	return c.Store.Install(v, name, in, meta)
}

// TestPullEntersStoreThreeTimes: from the download to the activation link,
// a pull calls Ingest, Commit and Install, once each, in that order, and
// the store changes the disk only in those (ingest, committed; then the
// intent, the link and the record).
func TestPullEntersStoreThreeTimes(t *testing.T) {
	ref, root := publishedHello(t, "1")
	var calls []string
	o := storeOpts(root)
	o.Hook = func(p string) {
		switch p {
		case "committed", "reuse":
			calls = append(calls, "Commit")
		case "linked":
			calls = append(calls, "link")
		}
	}
	s, err := store.Open(context.Background(), o)
	must(t, err)
	defer s.Close()
	n := testNode(root)
	if _, err := n.pull(context.Background(), s, countingInstaller{s, &calls}, PullRequest{Ref: ref}, nil); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(calls, " → "); got != "Ingest → Commit → Install → link" {
		t.Fatalf("store entries %s", got)
	}
	e, _ := s.Entry("hello")
	if e.Active.LayerDigest == "" || e.Active.LayerDigest.Algorithm() != digest.SHA256 {
		t.Fatalf("recorded %+v", e.Active)
	}
}

// TestUpdateResolvesTagOnce: update asks the registry for the tag once; a
// moved tag is then pulled from the digest it answered, not asked again
// (which could also see the tag move a second time in between).
func TestUpdateResolvesTagOnce(t *testing.T) {
	var byTag atomic.Int64
	reg := ocitest.NewOlareg(t, func(w http.ResponseWriter, r *http.Request, next http.Handler) bool {
		if ocitest.Manifests(r) && strings.HasSuffix(r.URL.Path, "/manifests/stable") {
			byTag.Add(1)
		}
		return false
	})
	ref := reg.Ref("ext/hello:stable")
	push(t, ref, makeImage(t, meta("hello", "1"), 0))
	root := nodeRoot(t, debianRelease)
	n := testNode(root)
	if _, err := n.Pull(context.Background(), PullRequest{Ref: ref}); err != nil {
		t.Fatal(err)
	}
	push(t, ref, makeImage(t, meta("hello", "2"), 0))
	byTag.Store(0)
	rs, err := n.Update(context.Background(), UpdateOptions{All: true})
	if err != nil || len(rs) != 1 || rs[0].Action != "updated" || rs[0].Version != "2" {
		t.Fatalf("update: %+v %v", rs, err)
	}
	if byTag.Load() != 1 {
		t.Fatalf("update asked for the tag %d times, want 1", byTag.Load())
	}
}

// TestPullResumesAfterKillParallel: the same for a pull that went on in
// parallel ranges (a link that caps each connection, so the single stream
// hands over): SIGKILLed at 50%, the rerun is sent only what the killed
// pull had not written (parts after the cut and holes before it), and
// leaves no ingest behind.
func TestPullResumesAfterKillParallel(t *testing.T) {
	if testing.Short() {
		t.Skip("a large image, a child process and a shaped link")
	}
	var served ocitest.Served
	reg := ocitest.NewOlareg(t, served.Fault())
	img := makeImage(t, meta("crash", "1"), 96<<20)
	push(t, reg.Ref("ext/crash:1"), img)
	// 10 MB/s a connection: the stream is the limit, with 8 s left
	// after the settling time.
	shaped := ocitest.Shaped(t, reg, ocitest.Link{PerConn: 10e6})
	ref := shaped.Ref("ext/crash:1")
	fi, err := os.Stat(img)
	must(t, err)
	size := fi.Size()
	root := nodeRoot(t, debianRelease)

	served.Reset()
	done := killedPull(t, root, ref)
	if served.MaxInFlight() < 2 {
		t.Fatalf("the killed pull never had two blob requests at once (ranges %q): it did not go parallel", served.Ranges())
	}
	checkNode(t, root, "killed at 50%", []string{""})

	served.Settle() // the killed child's requests may still be answered
	served.Reset()
	r, err := testNode(root).Pull(context.Background(), PullRequest{Ref: ref})
	if err != nil {
		t.Fatal(err)
	}
	if v := checkNode(t, root, "rerun", []string{"1"}); v != "1" || r.Action != "pulled" {
		t.Fatalf("after the rerun %q is active (%+v)", v, r)
	}
	served.Settle()
	again := served.Bytes()
	t.Logf("image %d bytes; killed with %d written; the rerun was sent %d in %d requests", size, done, again, len(served.Ranges()))
	// A write that had not reached the ingest's record when the kill
	// landed is fetched again: at most one buffer per connection (256 KiB,
	// at most 4), well under what fetching the missing parts whole would
	// cost (3.4 MB more in this test).
	if again <= 0 || again > size-done+1<<20 {
		t.Fatalf("the rerun was sent %d bytes; the killed pull had written %d of %d", again, done, size)
	}
	for _, d := range ingestDirs(t, root) {
		t.Fatalf("ingest %s left after the rerun", d)
	}
}

// killedPull runs TestResumeChild, which pulls ref into root and is
// SIGKILLed halfway, and returns how many bytes it had written then.
func killedPull(t *testing.T, root, ref string) int64 {
	t.Helper()
	cutFile := filepath.Join(t.TempDir(), "cut")
	cmd := exec.Command(os.Args[0], "-test.run=^TestResumeChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), envResumeRoot+"="+root, envResumeRef+"="+ref, envResumeCut+"="+cutFile)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("the child was not killed: %v\n%s", err, out)
	}
	b, err := os.ReadFile(cutFile)
	must(t, err)
	cut, err := strconv.ParseInt(string(b), 10, 64)
	must(t, err)
	return cut
}
