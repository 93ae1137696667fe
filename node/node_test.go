package node

import (
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sysext/sysext/activate"
	"github.com/sysext/sysext/extension"
	"github.com/sysext/sysext/oci/ocitest"
	"github.com/sysext/sysext/store"
)

func storeOpts(root string) store.Options {
	return store.Options{Root: root, LockTimeout: 5 * time.Second}
}

func active(t *testing.T, root, name string) string {
	t.Helper()
	target, err := os.Readlink(filepath.Join(root, "var/lib/extensions", name+".raw"))
	if err != nil {
		t.Fatalf("%s: no activation link: %v", name, err)
	}
	return filepath.Base(target)
}

func TestPullUpdateRollbackGCRemove(t *testing.T) {
	var count requestCounter
	reg := ocitest.NewOlareg(t, count.fault())
	v1 := makeImage(t, meta("hello", "1.0"), 0)
	v2 := makeImage(t, meta("hello", "2.0"), 0)
	ref := reg.Ref("ext/hello:stable")
	push(t, ref, v1)
	root := nodeRoot(t, debianRelease)
	n := testNode(root)
	ctx := context.Background()

	r, err := n.Pull(ctx, PullRequest{Ref: ref})
	if err != nil {
		t.Fatal(err)
	}
	if r.Action != "pulled" || r.Version != "1.0" || r.Activation != extension.ActivationUnproven {
		t.Fatalf("pull: %+v", r)
	}
	arch := string(extension.HostArch())
	if got := active(t, root, "hello"); got != "hello-1.0-"+arch+".raw" {
		t.Fatalf("active %s", got)
	}
	// Pulling what is active: a no-op without a blob request.
	count.reset()
	if r, err := n.Pull(ctx, PullRequest{Ref: ref}); err != nil || r.Changed {
		t.Fatalf("second pull: %+v %v", r, err)
	}
	if count.blobs.Load() != 0 {
		t.Fatalf("second pull fetched %d blobs", count.blobs.Load())
	}
	// Nothing new: one request.
	count.reset()
	res, err := n.Update(ctx, UpdateOptions{All: true})
	if err != nil || len(res) != 1 || res[0].Action != "unchanged" {
		t.Fatalf("update: %+v %v", res, err)
	}
	if got := count.all.Load(); got != 1 {
		t.Fatalf("update with nothing new made %d requests, want 1", got)
	}
	// The tag moves.
	push(t, ref, v2)
	if res, err := n.Update(ctx, UpdateOptions{All: true, DryRun: true}); err != nil || res[0].Action != "would-update" {
		t.Fatalf("dry run: %+v %v", res, err)
	}
	if active(t, root, "hello") != "hello-1.0-"+arch+".raw" {
		t.Fatal("dry run changed the active image")
	}
	res, err = n.Update(ctx, UpdateOptions{Names: []string{"hello"}})
	if err != nil || res[0].Action != "updated" || res[0].Version != "2.0" || res[0].From != "1.0" {
		t.Fatalf("update: %+v %v", res, err)
	}
	if active(t, root, "hello") != "hello-2.0-"+arch+".raw" {
		t.Fatal("update did not switch")
	}
	if r, err := n.Rollback(ctx, "hello"); err != nil || r.Version != "1.0" {
		t.Fatalf("rollback: %+v %v", r, err)
	}
	if active(t, root, "hello") != "hello-1.0-"+arch+".raw" {
		t.Fatal("rollback did not switch")
	}
	l, err := n.List(ctx)
	if err != nil || len(l.Extensions) != 1 || !l.Extensions[0].Linked || len(l.Extensions[0].Previous) != 1 || l.Extensions[0].Source != ref {
		t.Fatalf("list: %+v %v", l, err)
	}
	removed, err := n.GC(ctx, 1)
	if err != nil || len(removed) != 1 || !strings.Contains(removed[0], "hello-2.0") {
		t.Fatalf("gc: %v %v", removed, err)
	}
	if _, err := n.Remove(ctx, "hello"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(filepath.Join(root, "var/lib/extensions/hello.raw")); err == nil {
		t.Fatal("link left")
	}
}

func TestRefreshFailureRollsBack(t *testing.T) {
	ref, root := publishedHello(t, "stable")
	rr := &recRefresher{}
	o := testNode(root).opts
	o.Refresher, o.RefreshWithRoot = rr, true
	n := New(o)
	ctx := context.Background()
	r, err := n.Pull(ctx, PullRequest{Ref: ref})
	if err != nil || r.Activation != extension.ActivationProven || rr.n.Load() != 1 {
		t.Fatalf("pull: %+v %v (refreshes %d)", r, err, rr.n.Load())
	}
	arch := string(extension.HostArch())
	push(t, ref, makeImage(t, meta("hello", "2.0"), 0))
	rr.fail = errors.New("Failed to merge extensions: Invalid argument")
	_, err = n.Update(ctx, UpdateOptions{All: true})
	if err == nil || !strings.Contains(err.Error(), "Invalid argument") || !strings.Contains(err.Error(), "rolled back: hello 1.0 is active") {
		t.Fatalf("update with a failing refresh: %v", err)
	}
	if active(t, root, "hello") != "hello-1.0-"+arch+".raw" {
		t.Fatal("not switched back")
	}
	e := entry(t, root, "hello")
	if e.Activation.Status != extension.ActivationRolledBack || !strings.Contains(e.Activation.Reason, "Invalid argument") {
		t.Fatalf("activation %+v", e.Activation)
	}
	// A check hook that fails does the same.
	o.Checker = checkFunc(func(a Activation) error {
		if a.Install.Version == "2.0" {
			return errors.New("extension-release.hello is not merged")
		}
		return nil
	})
	n = New(o)
	// update does not retry a build that was rolled back; pull does.
	if rs, err := n.Update(ctx, UpdateOptions{All: true}); err != nil || rs[0].Action != "skipped" {
		t.Fatalf("update after a rollback: %+v %v", rs, err)
	}
	if _, err := n.Pull(ctx, PullRequest{Ref: ref}); err == nil || !strings.Contains(err.Error(), "not merged") {
		t.Fatalf("update with a failing check: %v", err)
	}
	if active(t, root, "hello") != "hello-1.0-"+arch+".raw" {
		t.Fatal("not switched back after a failed check")
	}
	if e := entry(t, root, "hello"); e.Activation.Status != extension.ActivationRolledBack {
		t.Fatalf("activation %+v", e.Activation)
	}
}

type checkFunc func(Activation) error

func (f checkFunc) Check(_ context.Context, a Activation) error { return f(a) }

func entry(t *testing.T, root, name string) *store.Entry {
	t.Helper()
	s, err := store.Open(context.Background(), storeOpts(root))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	e, ok := s.Entry(name)
	if !ok {
		t.Fatalf("%s not installed", name)
	}
	return e
}

func TestIncompatibleRefusedBeforeDownload(t *testing.T) {
	var count requestCounter
	reg := ocitest.NewOlareg(t, count.fault())
	m := meta("fed", "1.0")
	m.ID, m.VersionID = "fedora", "40"
	ref := reg.Ref("ext/fed:1")
	push(t, ref, makeImage(t, m, 0))
	root := nodeRoot(t, debianRelease)
	count.reset()
	_, err := testNode(root).Pull(context.Background(), PullRequest{Ref: ref})
	var ie *IncompatibleError
	if !errors.As(err, &ie) || !strings.Contains(err.Error(), "ID=fedora does not match the host's ID=debian") || !strings.Contains(err.Error(), "before download") {
		t.Fatalf("pull of an incompatible build: %v", err)
	}
	if count.blobs.Load() != 0 {
		t.Fatalf("%d blob requests before refusing", count.blobs.Load())
	}
	if _, err := os.Stat(filepath.Join(root, "var/lib/sysext/store/fed")); err == nil {
		if ents, _ := os.ReadDir(filepath.Join(root, "var/lib/sysext/store/fed")); len(ents) > 0 {
			t.Fatal("something stored")
		}
	}
}

func TestNameMismatch(t *testing.T) {
	ref, root := publishedHello(t, "1")
	_, err := testNode(root).Pull(context.Background(), PullRequest{Ref: ref, Name: "other"})
	if err == nil || !strings.Contains(err.Error(), `not "other"`) {
		t.Fatalf("pull --name other: %v", err)
	}
}

func TestCutConnectionResumed(t *testing.T) {
	var cut ocitest.Counter
	var layer atomic.Value // the image's layer digest: the chunk index is not cut
	layer.Store("none yet")
	cutLayer := ocitest.CutBlob(1<<20, 1, &cut)
	reg := ocitest.NewOlareg(t, func(w http.ResponseWriter, r *http.Request, next http.Handler) bool {
		return strings.Contains(r.URL.Path, layer.Load().(string)) && cutLayer(w, r, next)
	})
	ref := reg.Ref("ext/big:1")
	layer.Store(push(t, ref, makeImage(t, meta("big", "1.0"), 4<<20)).Manifests[0].Layer.Digest.String())
	root := nodeRoot(t, debianRelease)
	r, err := testNode(root).Pull(context.Background(), PullRequest{Ref: ref})
	if err != nil {
		t.Fatal(err)
	}
	if cut.N() != 1 || r.Resumes != 1 {
		t.Fatalf("cut %d, resumes %d", cut.N(), r.Resumes)
	}
}

func TestForeignExtensionRefused(t *testing.T) {
	ref, root := publishedHello(t, "1")
	p := filepath.Join(root, "etc/extensions/hello.raw")
	must(t, os.MkdirAll(filepath.Dir(p), 0o755))
	must(t, os.WriteFile(p, []byte("a person's image"), 0o644))
	_, err := testNode(root).Pull(context.Background(), PullRequest{Ref: ref})
	var fe *store.ForeignError
	if !errors.As(err, &fe) || !strings.Contains(err.Error(), p) {
		t.Fatalf("pull over a foreign image: %v", err)
	}
	if !fileContains(t, p, "a person's image") {
		t.Fatal("foreign image touched")
	}
}

func TestCorruptStateListExplains(t *testing.T) {
	ref, root := publishedHello(t, "1")
	n := testNode(root)
	if _, err := n.Pull(context.Background(), PullRequest{Ref: ref}); err != nil {
		t.Fatal(err)
	}
	state := filepath.Join(root, "var/lib/sysext/state.json")
	must(t, os.WriteFile(state, []byte(`{"schema":1,"extensions":{`), 0o644))
	linkBefore := active(t, root, "hello")
	if _, err := n.Update(context.Background(), UpdateOptions{All: true}); err == nil || !strings.Contains(err.Error(), state) {
		t.Fatalf("update with a corrupt state: %v", err)
	}
	l, err := n.List(context.Background())
	if err != nil || l.StateError == "" || len(l.Seen) != 1 || !l.Seen[0].Ours {
		t.Fatalf("list: %+v %v", l, err)
	}
	if active(t, root, "hello") != linkBefore {
		t.Fatal("link changed")
	}
}

func TestConcurrentRuns(t *testing.T) {
	reg := ocitest.NewOlareg(t)
	refA, refB := reg.Ref("ext/a:1"), reg.Ref("ext/b:1")
	push(t, refA, makeImage(t, meta("a", "1"), 0))
	push(t, refB, makeImage(t, meta("b", "1"), 0))
	root := nodeRoot(t, debianRelease)
	// Holding the lock: a second run with a short bound says who holds it.
	s, err := store.Open(context.Background(), storeOpts(root))
	must(t, err)
	o := testNode(root).opts
	o.Store.LockTimeout = 50 * time.Millisecond
	_, err = New(o).Pull(context.Background(), PullRequest{Ref: refA})
	var le *store.LockedError
	if !errors.As(err, &le) || !strings.Contains(err.Error(), "pid ") {
		t.Fatalf("pull while locked: %v", err)
	}
	s.Close()
	// Two at once: both finish, one after the other.
	errs := make(chan error, 2)
	for _, ref := range []string{refA, refB} {
		go func() {
			_, err := testNode(root).Pull(context.Background(), PullRequest{Ref: ref})
			errs <- err
		}()
	}
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	l, _ := testNode(root).List(context.Background())
	if len(l.Extensions) != 2 {
		t.Fatalf("after two concurrent pulls: %+v", l)
	}
}

func TestFirstInstallThatDoesNotMergeIsUnlinked(t *testing.T) {
	ref, root := publishedHello(t, "1")
	o := testNode(root).opts
	o.Refresher, o.RefreshWithRoot = &recRefresher{fail: errors.New("Failed to mount")}, true
	_, err := New(o).Pull(context.Background(), PullRequest{Ref: ref})
	if err == nil || !strings.Contains(err.Error(), "no version of hello is active") {
		t.Fatalf("pull: %v", err)
	}
	if _, err := os.Lstat(filepath.Join(root, "var/lib/extensions/hello.raw")); err == nil {
		t.Fatal("link left after a failed first activation")
	}
	if e := entry(t, root, "hello"); e.Activation.Status != extension.ActivationRolledBack || !strings.Contains(e.Activation.Reason, "Failed to mount") {
		t.Fatalf("activation %+v", e.Activation)
	}
}

// TestResumeInterruptedActivation: a run killed after the link switch
// leaves "pending" (the next run proves it) or "failed" before switching
// back (the next run finishes the rollback).
func TestResumeInterruptedActivation(t *testing.T) {
	ref, root := publishedHello(t, "stable")
	ctx := context.Background()
	off := testNode(root)
	if _, err := off.Pull(ctx, PullRequest{Ref: ref}); err != nil {
		t.Fatal(err)
	}
	push(t, ref, makeImage(t, meta("hello", "2.0"), 0))
	if _, err := off.Update(ctx, UpdateOptions{All: true}); err != nil {
		t.Fatal(err)
	}
	e := entry(t, root, "hello")
	set := func(a store.Activation) {
		s, err := store.Open(ctx, storeOpts(root))
		must(t, err)
		must(t, s.SetActivation("hello", a))
		s.Close()
	}
	o := off.opts
	o.Refresher, o.RefreshWithRoot = &recRefresher{}, true
	on := New(o)
	set(store.Activation{Status: extension.ActivationPending, Tried: e.Active.File})
	if _, err := on.Update(ctx, UpdateOptions{All: true}); err != nil {
		t.Fatal(err)
	}
	if got := entry(t, root, "hello").Activation.Status; got != extension.ActivationProven {
		t.Fatalf("after resuming a pending activation: %s", got)
	}
	set(store.Activation{Status: extension.ActivationFailed, Reason: "Invalid argument", Tried: e.Active.File})
	rs, err := on.Update(ctx, UpdateOptions{All: true})
	if err != nil || rs[0].Action != "skipped" {
		t.Fatalf("update after the rollback: %+v %v", rs, err)
	}
	got := entry(t, root, "hello")
	if got.Active.Version != "1.0" || got.Activation.Status != extension.ActivationRolledBack {
		t.Fatalf("after resuming a failed activation: %s %+v", got.Active.Version, got.Activation)
	}
}

// TestCopyModeBakesTheFile: --root DIR --extensions-dir /usr/lib/extensions
// --copy writes NAME.raw itself and nothing in /var.
func TestCopyModeBakesTheFile(t *testing.T) {
	ref, root := publishedHello(t, "1")
	o := testNode(root).opts
	o.Store.ExtensionsDir, o.Store.Copy = "/usr/lib/extensions", true
	for range 2 { // a second pull of the same image changes nothing
		r, err := New(o).Pull(context.Background(), PullRequest{Ref: ref})
		if err != nil || r.Action != "copied" {
			t.Fatalf("pull --copy: %+v %v", r, err)
		}
	}
	fi, err := os.Lstat(filepath.Join(root, "usr/lib/extensions/hello.raw"))
	if err != nil || !fi.Mode().IsRegular() {
		t.Fatalf("hello.raw: %v %v", fi, err)
	}
	if _, err := os.Stat(filepath.Join(root, "var")); err == nil {
		t.Fatal("--copy wrote into /var")
	}
	// Another build over it is refused: the file stays.
	push(t, ref, makeImage(t, meta("hello", "2.0"), 0))
	if _, err := New(o).Pull(context.Background(), PullRequest{Ref: ref}); err == nil || !strings.Contains(err.Error(), "replaces only an identical file") {
		t.Fatalf("pull --copy over another build: %v", err)
	}
}

// TestReleaseDigestRecorded: pull records the sha256 of the image's
// extension-release bytes, and activation proves the merged file against
// that digest; an entry from an older state file (no digest) falls back to
// comparing fields read from the stored image.
func TestReleaseDigestRecorded(t *testing.T) {
	reg := ocitest.NewOlareg(t)
	img := makeImage(t, meta("hello", "1.0"), 0)
	ref := reg.Ref("ext/hello:stable")
	push(t, ref, img)
	root := nodeRoot(t, debianRelease)
	n := testNode(root)
	ctx := context.Background()
	if _, err := n.Pull(ctx, PullRequest{Ref: ref}); err != nil {
		t.Fatal(err)
	}
	s, err := store.Open(ctx, storeOpts(root))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	e, _ := s.Entry("hello")
	want := activate.ReleaseDigest(meta("hello", "1.0").Release().Format())
	if e.Active.ReleaseDigest != want {
		t.Fatalf("recorded release digest %q, want %q (sha256 of the image's extension-release)", e.Active.ReleaseDigest, want)
	}
	if d := n.driver(ctx, s, "hello", e.Active, nil); d.New.Release != want || d.New.Fields != nil {
		t.Fatalf("proof expects %+v, want the recorded digest", d.New)
	}
	old := e.Active
	old.ReleaseDigest = ""
	if d := n.driver(ctx, s, "hello", old, nil); d.New.Release != "" || d.New.Fields == nil || d.New.Fields.Get(extension.FieldSysextVersionID) != "1.0" {
		t.Fatalf("without a recorded digest the proof expects %+v, want the image's fields", d.New)
	}
}

// systemd 252 exits 0 after a failed overlay mount: the production
// refresher (a command) keeps what it printed, so the reason of the
// rollback carries systemd's own words, not only the proof's.
func TestCommandRefresherKeepsOutputOnSuccess(t *testing.T) {
	ref, root := publishedHello(t, "1")
	o := testNode(root).opts
	o.Refresher = CommandRefresher{Argv: []string{"sh", "-c", "echo 'Using extensions hello.'; echo 'Failed to mount overlay (type overlay) on /usr: Invalid argument' >&2"}}
	o.RefreshWithRoot = true
	o.Checker = checkFunc(func(Activation) error { return errors.New("extension-release.hello is not merged") })
	_, err := New(o).Pull(context.Background(), PullRequest{Ref: ref})
	if err == nil {
		t.Fatal("pull proved an extension the check refused")
	}
	e := entry(t, root, "hello")
	if !strings.Contains(e.Activation.Reason, "not merged") || !strings.Contains(e.Activation.Reason, "systemd-sysext said: Failed to mount overlay (type overlay) on /usr: Invalid argument") || strings.Contains(e.Activation.Reason, "Using extensions") {
		t.Fatalf("reason %q", e.Activation.Reason)
	}
}
