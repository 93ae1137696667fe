package store

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/sysext/sysext/extension"
	"github.com/sysext/sysext/internal/testenv"
	"github.com/sysext/sysext/verify"
	"github.com/sysext/sysext/verify/verifytest"
)

func open(t *testing.T, o Options) *Store {
	t.Helper()
	s, err := Open(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// commitBytes writes content as NAME's image through an Ingest of inst
// and commits it as file.
func commitBytes(t *testing.T, inst Installer, name, file, content string) string {
	t.Helper()
	ctx := context.Background()
	d := digest.FromString(content)
	ing, err := inst.Ingest(ctx, name, ocispec.Descriptor{Digest: d, Size: int64(len(content))})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := ing.Stored(); !ok {
		if _, err := ing.WriteAt([]byte(content), 0); err != nil {
			t.Fatal(err)
		}
		ing.HashAt([]byte(content), 0)
	}
	stored, err := ing.Commit(ctx, int64(len(content)), d, file)
	if err != nil {
		t.Fatal(err)
	}
	return stored
}

// put stores content as NAME version and installs it.
func put(t *testing.T, s *Store, name, version, content string) Install {
	t.Helper()
	layer := digest.FromString(content)
	file := commitBytes(t, s, name, fmt.Sprintf("%s-%s-x86-64.raw", name, version), content)
	manifest := digest.FromString("manifest " + content)
	in := Install{Version: version, Arch: "x86-64", File: file, LayerDigest: layer, ManifestDigest: manifest, Size: int64(len(content))}
	if err := s.Install(verifytest.AcceptUnsigned(manifest), name, in, Meta{Source: "example.com/" + name + ":latest"}); err != nil {
		t.Fatal(err)
	}
	return in
}

func activeContent(t *testing.T, s *Store, name string) string {
	t.Helper()
	target, err := os.Readlink(s.LinkPath(name))
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(s.Path(target))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestInstallRollbackGCRemove(t *testing.T) {
	root := testenv.TempDirNoLeak(t, ".#")
	s := open(t, Options{Root: root})
	put(t, s, "hello", "1", "one")
	put(t, s, "hello", "2", "two")
	put(t, s, "hello", "3", "three")
	if got := activeContent(t, s, "hello"); got != "three" {
		t.Fatalf("active %q, want three", got)
	}
	target, _ := os.Readlink(s.LinkPath("hello"))
	if target != "/var/lib/sysext/store/hello/hello-3-x86-64.raw" {
		t.Fatalf("link target %s is not an absolute path on the running system", target)
	}
	fi, _ := os.Stat(s.Path(target))
	if fi.Mode().Perm()&0o222 != 0 {
		t.Fatalf("stored file is writable: %v", fi.Mode())
	}
	e, _ := s.Entry("hello")
	if len(e.Previous) != 2 || e.Previous[0].Version != "2" || e.Activation.Status != extension.ActivationPending {
		t.Fatalf("entry %+v", e)
	}
	if in, err := s.Rollback("hello"); err != nil || in.Version != "2" {
		t.Fatal(in, err)
	}
	if got := activeContent(t, s, "hello"); got != "two" {
		t.Fatalf("after rollback active %q", got)
	}
	// A second rollback goes back to where we were.
	if _, err := s.Rollback("hello"); err != nil || activeContent(t, s, "hello") != "three" {
		t.Fatal(err)
	}
	removed, err := s.GC(2)
	if err != nil || len(removed) != 1 || !strings.HasSuffix(removed[0], "hello-1-x86-64.raw") {
		t.Fatalf("gc removed %v, %v", removed, err)
	}
	if _, err := s.GC(0); err == nil {
		t.Fatal("gc --keep 0 accepted")
	}
	removed, _ = s.GC(1)
	if len(removed) != 1 || activeContent(t, s, "hello") != "three" {
		t.Fatalf("gc 1 removed %v", removed)
	}
	if _, err := s.Rollback("hello"); err == nil {
		t.Fatal("rollback without a previous version succeeded")
	}
	if err := s.Remove("hello"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(s.LinkPath("hello")); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("link left after remove")
	}
	if _, err := os.Stat(s.Path("/var/lib/sysext/store/hello")); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("store dir left after remove")
	}
	var nie *NotInstalledError
	if err := s.Remove("hello"); !errors.As(err, &nie) {
		t.Fatalf("remove twice: %v", err)
	}
}

func TestInstallRequiresVerifiedDigest(t *testing.T) {
	root := t.TempDir()
	s := open(t, Options{Root: root})
	file := commitBytes(t, s, "x", "x-1-x86-64.raw", "c")
	in := Install{File: file, ManifestDigest: digest.FromString("m")}
	if err := s.Install(verify.Verified{}, "x", in, Meta{}); err == nil {
		t.Fatal("installed with a zero Verified")
	}
	if err := s.Install(verifytest.AcceptUnsigned(digest.FromString("other")), "x", in, Meta{}); err == nil {
		t.Fatal("installed with the verification of another digest")
	}
	if _, err := os.Lstat(s.LinkPath("x")); err == nil {
		t.Fatal("link made by a refused install")
	}
}

func TestForeignExtensionUntouched(t *testing.T) {
	root := t.TempDir()
	s := open(t, Options{Root: root})
	for _, p := range []string{"/etc/extensions/mine.raw", "/var/lib/extensions/other.raw"} {
		os.MkdirAll(filepath.Dir(s.Path(p)), 0o755)
		os.WriteFile(s.Path(p), []byte("person's file"), 0o644)
	}
	for _, name := range []string{"mine", "other"} {
		file := commitBytes(t, s, name, name+"-1-x86-64.raw", "ours")
		m := digest.FromString("m")
		err := s.Install(verifytest.AcceptUnsigned(m), name, Install{File: file, ManifestDigest: m}, Meta{})
		var fe *ForeignError
		if !errors.As(err, &fe) || !strings.Contains(err.Error(), "was not installed by sysext") {
			t.Fatalf("%s: %v", name, err)
		}
	}
	b, _ := os.ReadFile(s.Path("/var/lib/extensions/other.raw"))
	if string(b) != "person's file" {
		t.Fatal("foreign file changed")
	}
	if len(s.State().Extensions) != 0 {
		t.Fatal("state records a refused install")
	}
}

func TestCommitNeverReplaces(t *testing.T) {
	root := t.TempDir()
	s := open(t, Options{Root: root})
	a := put(t, s, "x", "1", "first build")
	file := commitBytes(t, s, "x", "x-1-x86-64.raw", "rebuilt")
	if file == a.File || !strings.HasPrefix(file, "x-1-x86-64.") {
		t.Fatalf("rebuilt file stored as %s", file)
	}
	b, _ := os.ReadFile(s.ImagePath("x", a.File))
	if string(b) != "first build" {
		t.Fatal("stored file modified")
	}
	// Same content, recorded: the Ingest says it is stored.
	if f := commitBytes(t, s, "x", "x-1-x86-64.raw", "first build"); f != a.File {
		t.Fatal(f)
	}
	// Same content, committed but not recorded (a run that stopped before
	// Install): the stored file is reused.
	orphan := commitBytes(t, s, "y", "y-1-x86-64.raw", "orphan")
	if f := commitBytes(t, s, "y", "y-1-x86-64.raw", "orphan"); f != orphan {
		t.Fatal(f)
	}
}

// crash runs op with a hook that aborts at its n-th point (as a kill would:
// nothing after it runs), then reopens the store.
func crash(t *testing.T, o Options, n int, op func(*Store)) (crashed bool) {
	t.Helper()
	count, armed := 0, false
	o.Hook = func(string) {
		if !armed {
			return
		}
		count++
		if count == n {
			panic(errCrash)
		}
	}
	s, err := Open(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	armed = true
	defer func() {
		if r := recover(); r != nil {
			if r != errCrash {
				panic(r)
			}
			crashed = true
		}
	}()
	op(s)
	return false
}

var errCrash = errors.New("crash")

// TestCrashRecoveryInProcess stops install, rollback, remove and gc at
// every hook point and checks that the next Open leaves a consistent store:
// the link and the state agree (old or new), no temp file is left.
func TestCrashRecoveryInProcess(t *testing.T) {
	ops := map[string]func(*Store){
		"install":  func(s *Store) { put(t, s, "x", "3", "three") },
		"rollback": func(s *Store) { s.Rollback("x") },
		"remove":   func(s *Store) { s.Remove("x") },
		"gc":       func(s *Store) { s.GC(1) },
	}
	points := 0
	for opName, op := range ops {
		for n := 1; ; n++ {
			root := t.TempDir()
			o := Options{Root: root}
			s := open(t, o)
			put(t, s, "x", "1", "one")
			put(t, s, "x", "2", "two")
			s.Close()
			if !crash(t, o, n, op) {
				break
			}
			points++
			s2 := open(t, o)
			checkConsistent(t, s2, fmt.Sprintf("%s@%d", opName, n))
			s2.Close()
		}
	}
	t.Logf("%d crash points", points)
	if points < 12 {
		t.Fatalf("only %d crash points", points)
	}
}

// checkConsistent asserts the store's invariants.
func checkConsistent(t *testing.T, s *Store, what string) {
	t.Helper()
	st := s.State()
	for name, e := range st.Extensions {
		if e.Pending != nil {
			t.Errorf("%s: %s: pending left after recovery", what, name)
		}
		target, err := os.Readlink(s.LinkPath(name))
		if err != nil || target != s.linkTarget(name, e.Active.File) {
			t.Errorf("%s: %s: link %q, state says %s", what, name, target, e.Active.File)
		}
		for _, in := range append([]Install{e.Active}, e.Previous...) {
			if !fileHasDigest(s.ImagePath(name, in.File), in.LayerDigest) {
				t.Errorf("%s: %s: stored %s missing or changed", what, name, in.File)
			}
		}
	}
	if _, ok := st.Extensions["x"]; !ok {
		if _, err := os.Lstat(s.LinkPath("x")); err == nil {
			t.Errorf("%s: link without state", what)
		}
	}
	filepath.Walk(s.opts.Root, func(p string, fi os.FileInfo, err error) error {
		if err == nil && strings.HasPrefix(fi.Name(), ".#") {
			t.Errorf("%s: temp file %s left", what, p)
		}
		return nil
	})
}

func TestCorruptState(t *testing.T) {
	root := t.TempDir()
	o := Options{Root: root}
	s := open(t, o)
	put(t, s, "x", "1", "one")
	s.Close()
	p := filepath.Join(root, DefaultStateFile)
	for _, bad := range []string{"{", `{"schema": 99}`, `{"schema":1,"extensions":{"x":{"name":"../x"}}}`, `{"schema":1,"extensions":{"x":{"name":"x","active":{"file":"../../etc/passwd"}}}}`} {
		os.WriteFile(p, []byte(bad), 0o644)
		_, err := Open(context.Background(), o)
		var ce *CorruptStateError
		if !errors.As(err, &ce) || !strings.Contains(err.Error(), p) {
			t.Fatalf("%q: %v", bad, err)
		}
	}
	if _, err := os.Readlink(filepath.Join(root, "var/lib/extensions/x.raw")); err != nil {
		t.Fatal("link changed by a failed open")
	}
	seen, err := Scan(o)
	if err != nil || len(seen) != 1 || !seen[0].Ours || len(seen[0].Stored) != 1 {
		t.Fatalf("scan %+v %v", seen, err)
	}
}

func TestLockSaysWhoHoldsIt(t *testing.T) {
	root := t.TempDir()
	o := Options{Root: root, LockTimeout: 50 * time.Millisecond}
	s := open(t, o)
	_, err := Open(context.Background(), o)
	var le *LockedError
	if !errors.As(err, &le) || !strings.Contains(err.Error(), fmt.Sprintf("pid %d", os.Getpid())) {
		t.Fatalf("second open: %v", err)
	}
	s.Close()
	s2 := open(t, o)
	s2.Close()
}

// TestLockAcrossProcesses holds the lock in another process (flock(1)).
func TestLockAcrossProcesses(t *testing.T) {
	flock := testenv.RequireTool(t, "flock")
	root := t.TempDir()
	lockPath := filepath.Join(root, DefaultLockFile)
	os.MkdirAll(filepath.Dir(lockPath), 0o755)
	os.WriteFile(lockPath, []byte("pid=4242\ncommand=sysext update --all\nsince=2026-01-01T00:00:00Z\n"), 0o644)
	cmd := exec.Command(flock, "-x", lockPath, "sh", "-c", "echo locked; read x")
	stdin, _ := cmd.StdinPipe()
	out, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 7)
	if _, err := out.Read(buf); err != nil {
		t.Fatal(err)
	}
	_, err := Open(context.Background(), Options{Root: root, LockTimeout: 100 * time.Millisecond})
	if err == nil || !strings.Contains(err.Error(), "pid 4242 (sysext update --all) since 2026-01-01") {
		t.Fatalf("open while locked: %v", err)
	}
	stdin.Close()
	cmd.Wait()
	s := open(t, Options{Root: root, LockTimeout: time.Second})
	s.Close()
}

func TestCopyMode(t *testing.T) {
	root := testenv.TempDirNoLeak(t, ".#")
	o := Options{Root: root, ExtensionsDir: "/usr/lib/extensions", Copy: true}
	if _, err := Open(context.Background(), o); err == nil {
		t.Fatal("Open in copy mode")
	}
	c, err := OpenCopy(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	m := digest.FromString("m")
	file := commitBytes(t, c, "x", "x-1-x86-64.raw", "img")
	if err := c.Install(verifytest.AcceptUnsigned(m), "x", Install{File: file, ManifestDigest: m, LayerDigest: digest.FromString("img")}, Meta{}); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(root, "usr/lib/extensions/x.raw"))
	if err != nil || string(b) != "img" {
		t.Fatal(string(b), err)
	}
	if _, err := os.Stat(filepath.Join(root, "var")); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("copy mode wrote into /var")
	}
	// The same content again: nothing changes.
	commitBytes(t, c, "x", "x-1-x86-64.raw", "img")
	if err := c.Install(verifytest.AcceptUnsigned(m), "x", Install{ManifestDigest: m, LayerDigest: digest.FromString("img")}, Meta{}); err != nil {
		t.Fatal(err)
	}
	// Another content over it: refused, the file stays.
	commitBytes(t, c, "x", "x-1-x86-64.raw", "new")
	err = c.Install(verifytest.AcceptUnsigned(m), "x", Install{ManifestDigest: m, LayerDigest: digest.FromString("new")}, Meta{})
	var fe *ForeignError
	if !errors.As(err, &fe) || !strings.Contains(err.Error(), "replaces only an identical file") {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(root, "usr/lib/extensions/x.raw")); string(b) != "img" {
		t.Fatal("copied file replaced")
	}
	// An install without a committed image is refused.
	if err := c.Install(verifytest.AcceptUnsigned(m), "x", Install{ManifestDigest: m, LayerDigest: digest.FromString("img")}, Meta{}); err == nil {
		t.Fatal("install without a commit")
	}
}

func TestPerDeploymentSharesStore(t *testing.T) {
	sysroot := t.TempDir()
	depA := filepath.Join(sysroot, "ostree/deploy/fedora/deploy/aaa.0")
	depB := filepath.Join(sysroot, "ostree/deploy/fedora/deploy/bbb.0")
	// Both deployments share ostree/deploy/fedora/var; their own var/ is
	// an empty placeholder, as ostree makes it.
	shared := filepath.Join(sysroot, "ostree/deploy/fedora/var")
	for _, d := range []string{depA, depB, shared, filepath.Join(depA, "var"), filepath.Join(depB, "var")} {
		os.MkdirAll(d, 0o755)
	}
	if !IsDeploymentDir(depA) || !DefaultPerDeployment(depA+"/") || DefaultPerDeployment(sysroot) {
		t.Fatal("deployment dir not recognised")
	}
	for root, want := range map[string]bool{"": true, "/": true, "//": true, "/.": true, sysroot: false, depA: false} {
		if got := (Options{Root: root}).RunningSystem(); got != want {
			t.Errorf("Options{Root: %q}.RunningSystem() = %v", root, got)
		}
	}
	a := open(t, Options{Root: depA, PerDeployment: true})
	put(t, a, "x", "1", "one")
	a.Close()
	b := open(t, Options{Root: depB, PerDeployment: true})
	put(t, b, "x", "2", "two")
	if _, err := os.Lstat(filepath.Join(depB, "etc/extensions/x.raw")); err != nil {
		t.Fatal("per-deployment link not in /etc/extensions")
	}
	if ents, _ := os.ReadDir(filepath.Join(shared, "lib/sysext/store/x")); len(ents) != 2 {
		t.Fatalf("the shared store holds %d files, want 2", len(ents))
	}
	if ents, _ := os.ReadDir(filepath.Join(depA, "var")); len(ents) != 0 {
		t.Fatal("wrote into the deployment's own var/")
	}
	// B's gc keeps only its active version, but A's link still uses 1.
	removed, err := b.GC(1)
	if err != nil || len(removed) != 0 {
		t.Fatalf("gc removed %v (%v) that deployment A uses", removed, err)
	}
	if b.Remove("x") != nil {
		t.Fatal("remove")
	}
	b.Close()
	if activeContent(t, open(t, Options{Root: depA, PerDeployment: true, LockTimeout: time.Second}), "x") != "one" {
		t.Fatal("deployment A lost its extension")
	}
}

// FuzzReadState: any state file content gives a state or an error, never a
// panic, and an accepted state names only safe files.
func FuzzReadState(f *testing.F) {
	f.Add([]byte(`{"schema":1,"extensions":{"x":{"name":"x","active":{"file":"x-1-x86-64.raw"}}}}`))
	f.Add([]byte(`{"schema":1,"extensions":{"x":{"name":"x","pending":{"op":"activate","next":{"name":"x"}}}}}`))
	f.Add([]byte(`{`))
	f.Fuzz(func(t *testing.T, data []byte) {
		p := filepath.Join(t.TempDir(), "state.json")
		os.WriteFile(p, data, 0o644)
		st, err := readState(p)
		if err != nil {
			return
		}
		for name, e := range st.Extensions {
			if extension.ValidateName(name) != nil {
				t.Fatalf("accepted name %q", name)
			}
			for _, in := range append([]Install{e.Active}, e.Previous...) {
				if strings.Contains(in.File, "/") {
					t.Fatalf("accepted file %q", in.File)
				}
			}
		}
	})
}

// TestReleaseDigestKept: the extension-release digest recorded at install
// survives a reopen and a rollback; a state file written before the field
// existed still reads (empty digest: the proof falls back to fields).
func TestReleaseDigestKept(t *testing.T) {
	root := testenv.TempDirNoLeak(t, ".#")
	o := Options{Root: root}
	s := open(t, o)
	rel1, rel2 := digest.FromString("ID=_any\nSYSEXT_VERSION_ID=1\n"), digest.FromString("ID=_any\nSYSEXT_VERSION_ID=2\n")
	for _, v := range []struct {
		version string
		rel     digest.Digest
	}{{"1", rel1}, {"2", rel2}} {
		file := commitBytes(t, s, "x", "x-"+v.version+"-x86-64.raw", v.version)
		m := digest.FromString("manifest " + v.version)
		in := Install{Version: v.version, File: file, LayerDigest: digest.FromString(v.version), ManifestDigest: m, ReleaseDigest: v.rel}
		if err := s.Install(verifytest.AcceptUnsigned(m), "x", in, Meta{Source: "example.com/x:latest"}); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	s = open(t, o)
	if e, _ := s.Entry("x"); e.Active.ReleaseDigest != rel2 || e.Previous[0].ReleaseDigest != rel1 {
		t.Fatalf("after reopen: active %q previous %q", e.Active.ReleaseDigest, e.Previous[0].ReleaseDigest)
	}
	if in, err := s.Rollback("x"); err != nil || in.ReleaseDigest != rel1 {
		t.Fatalf("rollback gave %+v, %v", in, err)
	}
	s.Close()

	old := t.TempDir()
	p := filepath.Join(old, DefaultStateFile)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	const before = `{"schema":1,"extensions":{"x":{"name":"x","source":"example.com/x:latest","active":{"version":"1","arch":"x86-64","file":"x-1-x86-64.raw","size":1,"manifest_digest":"sha256:8e8a3b1ba2b3e3a1bbfd1e7a8bd5e1e3bba0ddf6b0df1d7e5bc1bb4f0d4cdb6d","layer_digest":"sha256:6b86b273ff34fce19d6b804eff5a3f5747ada4eaa22f1d49c01e52ddb7875b4b","installed_at":"2026-01-01T00:00:00Z"},"activation":{"status":"proven"}}}}`
	if err := os.WriteFile(p, []byte(before), 0o644); err != nil {
		t.Fatal(err)
	}
	st, err := readState(p)
	if err != nil {
		t.Fatalf("state without release_digest: %v", err)
	}
	if e := st.Extensions["x"]; e == nil || e.Active.Version != "1" || e.Active.ReleaseDigest != "" {
		t.Fatalf("old state read as %+v", e)
	}
}
