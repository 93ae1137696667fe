package node

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/sysext/sysext/oci/ocitest"
	"github.com/sysext/sysext/store"
)

// The crash test re-executes this test binary as a child that runs one
// node operation and SIGKILLs itself at its N-th step (a store or node hook,
// or a downloaded chunk). The parent then checks the invariants and that
// the next run recovers. Environment of the child:
const (
	envCrashRoot     = "SYSEXT_CRASH_ROOT"
	envCrashScenario = "SYSEXT_CRASH_SCENARIO"
	envCrashAt       = "SYSEXT_CRASH_AT"
	envCrashRef      = "SYSEXT_CRASH_REF"
)

// TestCrashChild is the child's body; it does nothing in a normal run.
func TestCrashChild(t *testing.T) {
	root := os.Getenv(envCrashRoot)
	if root == "" {
		t.Skip("only run as the crash test's child")
	}
	at, _ := strconv.Atoi(os.Getenv(envCrashAt))
	count := 0
	hook := func(string) {
		count++
		if count == at {
			syscall.Kill(os.Getpid(), syscall.SIGKILL)
			select {} // the signal is on its way
		}
	}
	o := testNode(root).opts
	o.Hook = hook
	o.Progress = func(int64, int64) { hook("chunk") }
	if err := crashScenario(New(o), os.Getenv(envCrashScenario), os.Getenv(envCrashRef)); err != nil {
		t.Fatal(err)
	}
}

func crashScenario(n *Node, scenario, ref string) error {
	ctx := context.Background()
	var err error
	switch scenario {
	case "pull":
		_, err = n.Pull(ctx, PullRequest{Ref: ref})
	case "update":
		_, err = n.Update(ctx, UpdateOptions{All: true})
	case "rollback":
		_, err = n.Rollback(ctx, "crash")
	case "pull2":
		_, err = n.Pull(ctx, PullRequest{Ref: strings.Replace(ref, ":one", ":two", 1)})
	case "sync":
		_, err = n.Sync(ctx, SyncOptions{})
	case "gc":
		_, err = n.GC(ctx, 1)
	case "remove":
		_, err = n.Remove(ctx, "crash")
	default:
		err = fmt.Errorf("unknown scenario %q", scenario)
	}
	return err
}

// TestCrashAtEveryStep kills pull, update, rollback, gc and remove at every
// step (≥ 100 distinct points in all) and checks after each kill: the store
// recovers on the next open; the activation link and the state agree; the
// active image is the one before or the one after the operation, intact;
// no temp file is left; running the operation again succeeds, resuming a
// download the kill cut short, and leaves no partial download.
func TestCrashAtEveryStep(t *testing.T) {
	if testing.Short() {
		t.Skip("many child processes")
	}
	reg := ocitest.NewOlareg(t)
	const pad = 12 << 20 // 12 MiB: a dozen chunk points per download
	imgs := map[string]string{}
	for _, v := range []string{"1", "2", "3"} {
		imgs[v] = makeImage(t, meta("crash", v), pad)
	}
	tagOne, tagMoving := reg.Ref("ext/crash:one"), reg.Ref("ext/crash:moving")
	push(t, tagOne, imgs["1"])
	push(t, reg.Ref("ext/crash:two"), imgs["2"])
	push(t, reg.Ref("ext/crash:three"), imgs["3"])
	push(t, tagMoving, imgs["1"])
	ctx := context.Background()

	templates := map[string]string{}
	mk := func(name string, refs ...string) {
		root := filepath.Join(t.TempDir(), "root")
		must(t, os.MkdirAll(filepath.Join(root, "etc"), 0o755))
		must(t, os.WriteFile(filepath.Join(root, "etc/os-release"), []byte(debianRelease), 0o644))
		for _, r := range refs {
			if _, err := testNode(root).Pull(ctx, PullRequest{Ref: r}); err != nil {
				t.Fatal(err)
			}
		}
		templates[name] = root
	}
	mk("pull")
	mk("update", tagMoving)
	mk("rollback", tagOne, reg.Ref("ext/crash:two"))
	mk("pull2", tagOne)
	mk("sync", tagOne)
	// sync: the declaration now names tag two.
	decl := filepath.Join(templates["sync"], "etc/sysext/extensions.d/crash.conf")
	must(t, os.MkdirAll(filepath.Dir(decl), 0o755))
	must(t, os.WriteFile(decl, []byte("[Extension]\nSource="+strings.Replace(tagOne, ":one", ":two", 1)+"\n"), 0o644))
	mk("gc", tagOne, reg.Ref("ext/crash:two"), reg.Ref("ext/crash:three"))
	mk("remove", tagOne, reg.Ref("ext/crash:two"))
	push(t, tagMoving, imgs["2"]) // the tag moves after the update template pulled it

	// Which versions may be active after a kill, and after the rerun.
	allowed := map[string][]string{"pull": {"", "1"}, "pull2": {"1", "2"}, "sync": {"1", "2"}, "update": {"1", "2"}, "rollback": {"2", "1"}, "gc": {"3"}, "remove": {"2", ""}}
	after := map[string]string{"pull": "1", "pull2": "2", "sync": "2", "update": "2", "gc": "3", "remove": ""}

	var total atomic.Int64
	t.Run("scenarios", func(t *testing.T) {
		for _, scenario := range []string{"pull", "pull2", "update", "sync", "rollback", "gc", "remove"} {
			t.Run(scenario, func(t *testing.T) {
				t.Parallel()
				points := 0
				for at := 1; ; at++ {
					root := filepath.Join(t.TempDir(), "root")
					// Hard links are safe: stored images are never modified and
					// the state is replaced by rename.
					if out, err := exec.Command("cp", "-al", templates[scenario], root).CombinedOutput(); err != nil {
						t.Fatalf("cp: %v %s", err, out)
					}
					cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
					cmd.Env = append(os.Environ(), envCrashRoot+"="+root, envCrashScenario+"="+scenario, envCrashAt+"="+strconv.Itoa(at), envCrashRef+"="+tagOne)
					out, err := cmd.CombinedOutput()
					var ee *exec.ExitError
					if err == nil {
						break // ran to the end: every point of this scenario was hit
					}
					if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
						t.Fatalf("%s@%d: child failed without being killed: %v\n%s", scenario, at, err, out)
					}
					points++
					what := fmt.Sprintf("%s killed at step %d", scenario, at)
					checkNode(t, root, what, allowed[scenario])
					if want, ok := after[scenario]; ok {
						err := crashScenario(testNode(root), scenario, tagOne)
						var nie *store.NotInstalledError
						if err != nil && !(scenario == "remove" && errors.As(err, &nie)) {
							t.Fatalf("%s: the next run failed: %v", what, err)
						}
						if v := checkNode(t, root, what+", rerun", []string{want}); v != want {
							t.Fatalf("%s: after the rerun %q is active, want %q", what, v, want)
						}
						// A download the kill cut short was resumed and
						// committed by the rerun, not left behind.
						if d := ingestDirs(t, root); len(d) != 0 {
							t.Fatalf("%s: after the rerun partial downloads are left: %v", what, d)
						}
						if scenario == "gc" {
							files := storedFiles(t, filepath.Join(root, "var/lib/sysext/store/crash"))
							if len(files) != 1 {
								t.Fatalf("%s: after the rerun the store holds %d files", what, len(files))
							}
						}
					}
					os.RemoveAll(root)
				}
				t.Logf("%s: %d crash points", scenario, points)
				total.Add(int64(points))
			})
		}
	})
	t.Logf("%d crash points in all", total.Load())
	if total.Load() < 100 {
		t.Fatalf("only %d crash points", total.Load())
	}
}

// checkNode opens the store (which recovers), checks its invariants and
// returns the active version of "crash" ("" when not installed).
func checkNode(t *testing.T, root, what string, allowed []string) string {
	t.Helper()
	s, err := store.Open(context.Background(), storeOpts(root))
	if err != nil {
		t.Fatalf("%s: reopen: %v", what, err)
	}
	defer s.Close()
	e, ok := s.Entry("crash")
	version := ""
	link := filepath.Join(root, "var/lib/extensions/crash.raw")
	if ok {
		version = e.Active.Version
		if e.Pending != nil {
			t.Fatalf("%s: a pending change survived recovery", what)
		}
		if !s.LinkTargetIs("crash", e.Active.File) {
			t.Fatalf("%s: the link does not point at the recorded active image", what)
		}
		if got := fileSHA(t, s.ImagePath("crash", e.Active.File)); got != e.Active.LayerDigest.Encoded() {
			t.Fatalf("%s: the active image is damaged", what)
		}
		for _, p := range e.Previous {
			if fi, err := os.Stat(s.ImagePath("crash", p.File)); err != nil || fi.Size() != p.Size {
				t.Fatalf("%s: previous version %s is missing or damaged", what, p.Version)
			}
		}
	} else if _, err := os.Lstat(link); err == nil {
		t.Fatalf("%s: a link without a record", what)
	}
	okVersion := false
	for _, a := range allowed {
		okVersion = okVersion || a == version
	}
	if !okVersion {
		t.Fatalf("%s: version %q active, want one of %q", what, version, allowed)
	}
	filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err == nil && strings.HasPrefix(fi.Name(), ".#") {
			t.Fatalf("%s: temp file %s left after recovery", what, p)
		}
		return nil
	})
	return version
}

func fileSHA(t *testing.T, p string) string {
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	io.Copy(h, f)
	return hex.EncodeToString(h.Sum(nil))
}
