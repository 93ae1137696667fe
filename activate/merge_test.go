package activate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/sysext/sysext/atomicfile"
	"github.com/sysext/sysext/extension"
	"github.com/sysext/sysext/internal/testenv"
)

// The tests in this file run the real systemd-sysext inside a private mount
// namespace (testenv.RunInNamespace). The driver runs in this test binary,
// started again inside the namespace as a helper (TestMain), so the merge,
// the proof and the rollback all see the namespace's /usr; a shell script
// in the namespace runs the helper one or more times, then the merged
// program.

const helperEnv = "SYSEXT_ACTIVATE_TEST_HELPER"

func TestMain(m *testing.M) {
	if args := os.Getenv(helperEnv); args != "" {
		os.Exit(runHelper(args))
	}
	os.Exit(m.Run())
}

// version is one stored image in a test.
type version struct {
	File    string `json:"file"`
	Version string `json:"version"`
	Release string `json:"release"` // digest of its extension-release file
}

// helperArgs tells the helper what to do.
type helperArgs struct {
	Op    string   `json:"op"` // run, resume, preflight
	Name  string   `json:"name"`
	New   version  `json:"new"`
	Prev  *version `json:"prev,omitempty"`
	Link  string   `json:"link"`
	State string   `json:"state"` // the test's stand-in for the node's state file
	// Faults.
	FailRefreshOnce bool `json:"fail_refresh_once,omitempty"`
	KillAfterSwitch bool `json:"kill_after_switch,omitempty"`
	Strict          bool `json:"strict,omitempty"`
}

// testState is what the helper persists through Driver.Record: the plan and
// the status, as the node's state file would.
type testState struct {
	Args   helperArgs                 `json:"args"`
	Status extension.ActivationStatus `json:"status"`
	Reason string                     `json:"reason"`
}

func runHelper(raw string) int {
	var a helperArgs
	if err := json.Unmarshal([]byte(raw), &a); err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		return 3
	}
	ctx := context.Background()
	if a.Op == "preflight" {
		rep := Check(ctx, System{SystemdVersion: 252}, []Image{{Name: a.Name, Format: "squashfs"}}, a.Strict)
		b, _ := json.Marshal(rep)
		fmt.Printf("PREFLIGHT %s\n", b)
		if rep.Err() != nil {
			fmt.Printf("REFUSED %v\n", rep.Err())
		}
		return 0
	}
	status, reason := extension.ActivationStatus(""), ""
	if a.Op == "resume" {
		data, err := os.ReadFile(a.State)
		if err != nil {
			fmt.Fprintln(os.Stderr, "helper:", err)
			return 3
		}
		var st testState
		if err := json.Unmarshal(data, &st); err != nil {
			fmt.Fprintln(os.Stderr, "helper:", err)
			return 3
		}
		a.Name, a.New, a.Prev, a.Link, status, reason = st.Args.Name, st.Args.New, st.Args.Prev, st.Args.Link, st.Status, st.Reason
		a.KillAfterSwitch, a.FailRefreshOnce = false, false
	}
	d := testDriver(a)
	var o Outcome
	var err error
	if a.Op == "resume" {
		o, err = d.Resume(ctx, status, reason)
	} else {
		o, err = d.Run(ctx)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		return 3
	}
	b, _ := json.Marshal(o)
	fmt.Printf("OUTCOME %s\n", b)
	fmt.Printf("SENTENCE %s\n", o.Sentence())
	return 0
}

func testDriver(a helperArgs) *Driver {
	sx := Sysext{}
	failed := false
	d := &Driver{
		New:      Expect{Name: a.Name, Version: a.New.Version, Release: digestOf(a.New.Release)},
		Previous: Expect{Name: a.Name, Absent: true},
		Activate: func(ctx context.Context) error {
			if err := atomicfile.Symlink(a.New.File, a.Link); err != nil {
				return err
			}
			if a.KillAfterSwitch {
				// The crash the driver must survive: the link is switched,
				// nothing is refreshed or proven.
				syscall.Kill(os.Getpid(), syscall.SIGKILL)
				select {}
			}
			return nil
		},
		Revert: func(ctx context.Context) error {
			if a.Prev == nil {
				if err := os.Remove(a.Link); err != nil && !errors.Is(err, os.ErrNotExist) {
					return err
				}
				return nil
			}
			return atomicfile.Symlink(a.Prev.File, a.Link)
		},
		Refresh: func(ctx context.Context) (string, error) {
			if a.FailRefreshOnce && !failed {
				failed = true
				return "", errors.New("refresh: injected failure")
			}
			return sx.Refresh(ctx)
		},
		Prove: Prover{Sysext: sx}.Prove,
		Record: func(ctx context.Context, s extension.ActivationStatus, reason string) error {
			b, err := json.Marshal(testState{Args: a, Status: s, Reason: reason})
			if err != nil {
				return err
			}
			return atomicfile.WriteFile(a.State, b, 0o644)
		},
	}
	if a.Prev != nil {
		d.Previous = Expect{Name: a.Name, Version: a.Prev.Version, Release: digestOf(a.Prev.Release)}
	}
	return d
}

// image builds a squashfs extension NAME with a program NAME-probe that
// prints "NAME VERSION", and returns it with its release digest.
func image(t *testing.T, dir, name, ver, release string) version {
	t.Helper()
	testenv.RequireTool(t, "mksquashfs")
	tree := filepath.Join(t.TempDir(), "tree")
	must(t, os.MkdirAll(filepath.Join(tree, "usr/lib/extension-release.d"), 0o755))
	must(t, os.MkdirAll(filepath.Join(tree, "usr/bin"), 0o755))
	must(t, os.WriteFile(filepath.Join(tree, "usr/lib/extension-release.d/extension-release."+name), []byte(release), 0o644))
	must(t, os.WriteFile(filepath.Join(tree, "usr/bin", name+"-probe"), []byte("#!/bin/sh\necho '"+name+" "+ver+"'\n"), 0o755))
	file := filepath.Join(dir, name+"-"+ver+"-x86-64.raw")
	if out, err := exec.Command("mksquashfs", tree, file, "-all-root", "-noappend", "-quiet").CombinedOutput(); err != nil {
		t.Fatalf("mksquashfs: %v: %s", err, out)
	}
	return version{File: file, Version: ver, Release: ReleaseDigest([]byte(release)).String()}
}

// garbage writes a file with squashfs magic and random contents.
func garbage(t *testing.T, dir, name, ver string) version {
	t.Helper()
	b := make([]byte, 8192)
	for i := range b {
		b[i] = byte(i*7 + 13)
	}
	copy(b, "hsqs")
	file := filepath.Join(dir, name+"-"+ver+"-x86-64.raw")
	must(t, os.WriteFile(file, b, 0o644))
	return version{File: file, Version: ver, Release: ReleaseDigest([]byte("ID=_any\n")).String()}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// helperCmd is a shell line that runs this test binary as the helper.
func helperCmd(t *testing.T, a helperArgs) string {
	t.Helper()
	exe, err := os.Executable()
	must(t, err)
	b, err := json.Marshal(a)
	must(t, err)
	return helperEnv + "=" + testenv.ShellQuote(string(b)) + " " + testenv.ShellQuote(exe)
}

// outcomes picks the helper's outcomes out of the script's output.
func outcomes(t *testing.T, out string) []Outcome {
	t.Helper()
	var res []Outcome
	for _, l := range strings.Split(out, "\n") {
		if rest, ok := strings.CutPrefix(l, "OUTCOME "); ok {
			var o Outcome
			must(t, json.Unmarshal([]byte(rest), &o))
			res = append(res, o)
		}
	}
	return res
}

func readTestState(t *testing.T, path string) testState {
	t.Helper()
	b, err := os.ReadFile(path)
	must(t, err)
	var st testState
	must(t, json.Unmarshal(b, &st))
	return st
}

const goodRelease = "ID=_any\nSYSEXT_VERSION_ID=%s\n"

// An update whose new image systemd refuses at merge time ends with the
// previous version merged and its program running, the state saying why.
func TestRollbackWhenSystemdRefusesImage(t *testing.T) {
	testenv.RequireRoot(t)
	cases := []struct {
		name string
		bad  func(t *testing.T, dir string) version
		// what systemd said, as it must appear in the reason
		cause string
	}{
		{"incompatible ID", func(t *testing.T, dir string) version {
			// Our metadata check would refuse this; the test hands it to
			// systemd directly. 252 exits 0 and unmerges everything.
			return image(t, dir, "probe", "2", "ID=notanos\nVERSION_ID=1\nSYSEXT_VERSION_ID=2\n")
		}, "ignored due to incompatible version"},
		{"unmountable filesystem", func(t *testing.T, dir string) version {
			return garbage(t, dir, "probe", "2")
		}, "Failed to read metadata for image probe"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := testenv.TempDirNoLeak(t, atomicfile.TempPrefix)
			v1 := image(t, dir, "probe", "1", fmt.Sprintf(goodRelease, "1"))
			v2 := c.bad(t, dir)
			state := filepath.Join(dir, "state.json")
			base := helperArgs{Op: "run", Name: "probe", Link: "/run/extensions/probe.raw", State: state}
			first, second := base, base
			first.New = v1
			second.New, second.Prev = v2, &v1
			out, err := testenv.RunInNamespace(t, helperCmd(t, first)+"\n"+helperCmd(t, second)+"\nprobe-probe\nreadlink /run/extensions/probe.raw\n")
			if err != nil {
				t.Fatalf("namespace: %v\n%s", err, out)
			}
			got := outcomes(t, out)
			if len(got) != 2 {
				t.Fatalf("want 2 outcomes, got %d:\n%s", len(got), out)
			}
			if got[0].Status != extension.ActivationProven {
				t.Fatalf("v1: %+v\n%s", got[0], out)
			}
			o := got[1]
			t.Log(o.Sentence())
			if o.Status != extension.ActivationRolledBack || o.Active != "1" || !strings.Contains(o.Reason, c.cause) {
				t.Fatalf("v2: want rolled back to 1 naming %q, got %+v\n%s", c.cause, o, out)
			}
			if o.Err() == nil || !strings.Contains(o.Sentence(), "probe 1 is active") {
				t.Errorf("sentence %q, err %v", o.Sentence(), o.Err())
			}
			if !strings.Contains(out, "\nprobe 1\n") {
				t.Errorf("the previous version's program does not run:\n%s", out)
			}
			if !strings.Contains(out, v1.File) {
				t.Errorf("the link does not point at version 1 again:\n%s", out)
			}
			st := readTestState(t, state)
			if st.Status != extension.ActivationRolledBack || !strings.Contains(st.Reason, c.cause) {
				t.Errorf("state: %+v", st)
			}
		})
	}
}

// A refresh that fails (the seam) is rolled back the same way; the first
// install with no previous version rolls back to nothing.
func TestRollbackWhenRefreshFails(t *testing.T) {
	testenv.RequireRoot(t)
	dir := testenv.TempDirNoLeak(t, atomicfile.TempPrefix)
	v1 := image(t, dir, "probe", "1", fmt.Sprintf(goodRelease, "1"))
	v2 := image(t, dir, "probe", "2", fmt.Sprintf(goodRelease, "2"))
	bad := garbage(t, dir, "other", "1")
	state := filepath.Join(dir, "state.json")
	first := helperArgs{Op: "run", Name: "probe", New: v1, Link: "/run/extensions/probe.raw", State: state}
	second := first
	second.New, second.Prev, second.FailRefreshOnce = v2, &v1, true
	third := helperArgs{Op: "run", Name: "other", New: bad, Link: "/run/extensions/other.raw", State: filepath.Join(dir, "other.json")}
	out, err := testenv.RunInNamespace(t, helperCmd(t, first)+"\n"+helperCmd(t, second)+"\n"+helperCmd(t, third)+
		"\nprobe-probe\nls /run/extensions\n")
	if err != nil {
		t.Fatalf("namespace: %v\n%s", err, out)
	}
	got := outcomes(t, out)
	if len(got) != 3 {
		t.Fatalf("want 3 outcomes:\n%s", out)
	}
	if o := got[1]; o.Status != extension.ActivationRolledBack || o.Active != "1" || !strings.Contains(o.Reason, "injected failure") {
		t.Fatalf("failed refresh: %+v\n%s", o, out)
	}
	if o := got[2]; o.Status != extension.ActivationRolledBack || o.Active != "" || !strings.Contains(o.Sentence(), "no version of other is active") {
		t.Fatalf("first install of a bad image: %+v\n%s", o, out)
	}
	if !strings.Contains(out, "\nprobe 1\n") || strings.Contains(out, "other.raw") {
		t.Errorf("want probe 1 running and no other.raw link:\n%s", out)
	}
}

// A run killed between the link switch and the proof is finished by the
// next run: proven when the new version merges, rolled back when it does not.
func TestResumeAfterKill(t *testing.T) {
	testenv.RequireRoot(t)
	dir := testenv.TempDirNoLeak(t, atomicfile.TempPrefix)
	v1 := image(t, dir, "probe", "1", fmt.Sprintf(goodRelease, "1"))
	v2 := image(t, dir, "probe", "2", fmt.Sprintf(goodRelease, "2"))
	v3 := garbage(t, dir, "probe", "3")
	state := filepath.Join(dir, "state.json")
	base := helperArgs{Op: "run", Name: "probe", Link: "/run/extensions/probe.raw", State: state}
	first := base
	first.New = v1
	kill2, kill3 := base, base
	kill2.New, kill2.Prev, kill2.KillAfterSwitch = v2, &v1, true
	kill3.New, kill3.Prev, kill3.KillAfterSwitch = v3, &v2, true
	resume := helperArgs{Op: "resume", State: state}
	script := strings.Join([]string{
		helperCmd(t, first),
		helperCmd(t, kill2) + " || echo killed rc=$?",
		"cat " + testenv.ShellQuote(state) + "; echo",
		helperCmd(t, resume),
		"probe-probe",
		helperCmd(t, kill3) + " || echo killed rc=$?",
		helperCmd(t, resume),
		"probe-probe",
	}, "\n")
	out, err := testenv.RunInNamespace(t, script)
	if err != nil {
		t.Fatalf("namespace: %v\n%s", err, out)
	}
	if strings.Count(out, "killed rc=137") != 2 {
		t.Fatalf("the helper was not killed twice:\n%s", out)
	}
	if !strings.Contains(out, `"status":"pending"`) {
		t.Errorf("the killed run left no pending status:\n%s", out)
	}
	got := outcomes(t, out)
	if len(got) != 3 {
		t.Fatalf("want 3 outcomes:\n%s", out)
	}
	if o := got[1]; o.Status != extension.ActivationProven || o.Active != "2" {
		t.Errorf("resume of a good version: %+v", o)
	}
	if o := got[2]; o.Status != extension.ActivationRolledBack || o.Active != "2" || !strings.Contains(o.Reason, "Failed to read metadata") {
		t.Errorf("resume of a bad version: %+v", o)
	}
	if !strings.Contains(out, "\nprobe 2\nprobe 2\n") && strings.Count(out, "\nprobe 2\n") < 2 {
		t.Errorf("probe 2 should run after both resumes:\n%s", out)
	}
	if st := readTestState(t, state); st.Status != extension.ActivationRolledBack {
		t.Errorf("state: %+v", st)
	}
}

// On a /usr already stacked two overlays deep, 252's merge fails and exits
// 0: the preflight warns (and refuses with strict) from the real mount
// table, and the driver, judging by the merged tree, reports the failure
// in systemd's words instead of success.
func TestStackedUsr(t *testing.T) {
	testenv.RequireRoot(t)
	dir := testenv.TempDirNoLeak(t, atomicfile.TempPrefix)
	v1 := image(t, dir, "probe", "1", fmt.Sprintf(goodRelease, "1"))
	state := filepath.Join(dir, "state.json")
	run := helperArgs{Op: "run", Name: "probe", New: v1, Link: "/run/extensions/probe.raw", State: state}
	pre := helperArgs{Op: "preflight", Name: "probe"}
	strict := pre
	strict.Strict = true
	script := `mkdir -p /run/o1/u /run/o1/w /run/o2/u /run/o2/w
mount -t overlay overlay -o lowerdir=/usr,upperdir=/run/o1/u,workdir=/run/o1/w /usr
mount -t overlay overlay -o lowerdir=/usr,upperdir=/run/o2/u,workdir=/run/o2/w /usr
` + helperCmd(t, pre) + "\n" + helperCmd(t, strict) + "\n" + helperCmd(t, run) + "\n"
	out, err := testenv.RunInNamespace(t, script)
	if err != nil {
		t.Fatalf("namespace: %v\n%s", err, out)
	}
	if !strings.Contains(out, `"check":"stacking","severity":"warning"`) {
		t.Errorf("no stacking warning:\n%s", out)
	}
	if strings.Count(out, "REFUSED ") != 1 || !strings.Contains(out, "2 stacked overlays") {
		t.Errorf("want exactly the strict preflight refused, naming the depth:\n%s", out)
	}
	got := outcomes(t, out)
	if len(got) != 1 {
		t.Fatalf("want 1 outcome:\n%s", out)
	}
	if o := got[0]; o.Status != extension.ActivationRolledBack || o.Active != "" || !strings.Contains(o.Reason, "Failed to mount sysext") {
		t.Errorf("want a rollback to nothing naming systemd's mount failure, got %+v", o)
	}
}

func digestOf(s string) digest.Digest { return digest.Digest(s) }
