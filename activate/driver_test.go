package activate

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/sysext/sysext/extension"
	"github.com/sysext/sysext/fsimage"
)

// fakeNode stands in for the node's store and refresher; faults are set per
// test. merged is what a refresh would merge: the version the link points at.
type fakeNode struct {
	link, merged string
	calls        []string
	records      []string

	activateErr, revertErr, recordErr error
	recordFailFrom                    int // Record fails from this call on (1-based; 0 = never)
	refreshErr                        []error
	refreshOut                        string
	unmergeable                       map[string]bool // versions systemd refuses (exit 0)
}

func (f *fakeNode) driver(newV, prevV string) *Driver {
	d := &Driver{
		New:      Expect{Name: "hello", Version: newV},
		Previous: Expect{Name: "hello", Version: prevV, Absent: prevV == ""},
		Activate: func(ctx context.Context) error {
			f.calls = append(f.calls, "activate")
			if f.activateErr != nil {
				return f.activateErr
			}
			f.link = newV
			return nil
		},
		Revert: func(ctx context.Context) error {
			f.calls = append(f.calls, "revert")
			if f.revertErr != nil {
				return f.revertErr
			}
			f.link = prevV
			return nil
		},
		Refresh: func(ctx context.Context) (string, error) {
			f.calls = append(f.calls, "refresh")
			if len(f.refreshErr) > 0 {
				err := f.refreshErr[0]
				f.refreshErr = f.refreshErr[1:]
				if err != nil {
					return f.refreshOut, err
				}
			}
			f.merged = f.link
			if f.unmergeable[f.link] {
				f.merged = ""
			}
			return f.refreshOut, nil
		},
		Prove: func(ctx context.Context, want Expect) error {
			f.calls = append(f.calls, "prove "+want.String())
			if want.Absent {
				if f.merged != "" {
					return &ProofError{want, "still merged"}
				}
				return nil
			}
			if f.merged != want.Version {
				return &ProofError{want, fmt.Sprintf("systemd-sysext lists %q", f.merged)}
			}
			return nil
		},
		Record: func(ctx context.Context, s extension.ActivationStatus, reason string) error {
			f.records = append(f.records, string(s))
			if f.recordFailFrom > 0 && len(f.records) >= f.recordFailFrom {
				return f.recordErr
			}
			return nil
		},
	}
	return d
}

func (f *fakeNode) trace() string { return strings.Join(f.calls, ", ") }

func TestDriverProven(t *testing.T) {
	f := &fakeNode{link: "1", merged: "1"}
	o, err := f.driver("2", "1").Run(context.Background())
	if err != nil || o.Status != extension.ActivationProven || o.Active != "2" || o.Err() != nil {
		t.Fatalf("%+v %v", o, err)
	}
	if got := strings.Join(f.records, " "); got != "pending refreshed proven" {
		t.Errorf("records %s", got)
	}
	if f.trace() != "activate, refresh, prove hello 2" {
		t.Errorf("calls %s", f.trace())
	}
	if o.Sentence() != "hello 2 is merged and proven." {
		t.Errorf("%q", o.Sentence())
	}
}

func TestDriverRollsBackWhenSystemdRefuses(t *testing.T) {
	f := &fakeNode{link: "1", merged: "1", unmergeable: map[string]bool{"2": true},
		refreshOut: "Using extensions 'hello'.\nFailed to mount sysext (type overlay) on /run/systemd/sysext/overlay/usr: Invalid argument\n"}
	o, err := f.driver("2", "1").Run(context.Background())
	if err != nil || o.Status != extension.ActivationRolledBack || o.Active != "1" || f.link != "1" {
		t.Fatalf("%+v %v (link %s)", o, err, f.link)
	}
	if !strings.Contains(o.Reason, "Failed to mount sysext") || strings.Contains(o.Reason, "Using extensions") {
		t.Errorf("reason %q", o.Reason)
	}
	if got := strings.Join(f.records, " "); got != "pending refreshed failed rolled-back" {
		t.Errorf("records %s", got)
	}
	var oe *OutcomeError
	if err := o.Err(); !errors.As(err, &oe) || !strings.Contains(err.Error(), "hello 1 is active and merged") || !strings.Contains(err.Error(), "hello 2 did not merge (") {
		t.Errorf("err %v", err)
	}
}

func TestDriverRollbackFailsToo(t *testing.T) {
	f := &fakeNode{link: "1", merged: "1", unmergeable: map[string]bool{"1": true, "2": true}}
	o, _ := f.driver("2", "1").Run(context.Background())
	if o.Status != extension.ActivationFailed || o.Active != "1" || !strings.Contains(o.Reason, "after switching back to hello 1") {
		t.Fatalf("%+v", o)
	}
	if !strings.Contains(o.Sentence(), "did not restore a proven merge") || o.Err() == nil {
		t.Errorf("%q", o.Sentence())
	}
	f = &fakeNode{link: "1", merged: "1", unmergeable: map[string]bool{"2": true}, revertErr: errors.New("store: no space left on device")}
	o, _ = f.driver("2", "1").Run(context.Background())
	if o.Status != extension.ActivationFailed || o.Active != "2" || !strings.Contains(o.Reason, "no space left") {
		t.Errorf("revert failure: %+v", o)
	}
}

func TestDriverRefreshFails(t *testing.T) {
	f := &fakeNode{link: "1", merged: "1", refreshErr: []error{errors.New("refresh of systemd-sysext.service: exit status 1")}}
	o, _ := f.driver("2", "1").Run(context.Background())
	if o.Status != extension.ActivationRolledBack || o.Active != "1" || !strings.Contains(o.Reason, "exit status 1") {
		t.Fatalf("%+v", o)
	}
	if f.trace() != "activate, refresh, revert, refresh, prove hello 1" {
		t.Errorf("calls %s", f.trace())
	}
}

func TestDriverActivateFails(t *testing.T) {
	f := &fakeNode{link: "1", merged: "1", activateErr: errors.New("link: read-only file system")}
	o, _ := f.driver("2", "1").Run(context.Background())
	if o.Status != extension.ActivationRolledBack || o.Active != "1" || !strings.Contains(o.Reason, "read-only file system") {
		t.Fatalf("%+v", o)
	}
}

func TestDriverFirstInstallRollsBackToNone(t *testing.T) {
	f := &fakeNode{unmergeable: map[string]bool{"1": true}}
	o, _ := f.driver("1", "").Run(context.Background())
	if o.Status != extension.ActivationRolledBack || o.Active != "" || !strings.Contains(o.Sentence(), "no version of hello is active") {
		t.Fatalf("%+v %q", o, o.Sentence())
	}
	if !strings.Contains(f.trace(), "prove no hello") {
		t.Errorf("calls %s", f.trace())
	}
}

func TestDriverOffline(t *testing.T) {
	f := &fakeNode{link: "1"}
	d := f.driver("2", "1")
	d.Offline, d.Refresh, d.Prove = true, nil, nil
	o, err := d.Run(context.Background())
	if err != nil || o.Status != extension.ActivationUnproven || o.Err() != nil || f.link != "2" {
		t.Fatalf("%+v %v", o, err)
	}
	if got := strings.Join(f.records, " "); got != "pending unproven" {
		t.Errorf("records %s", got)
	}
	if !strings.Contains(o.Sentence(), "will be proven at the next 'sysext sync'") {
		t.Errorf("%q", o.Sentence())
	}
}

func TestDriverRecordFailures(t *testing.T) {
	// The intent cannot be recorded: nothing is touched.
	f := &fakeNode{link: "1", recordFailFrom: 1, recordErr: errors.New("state: no space left on device")}
	_, err := f.driver("2", "1").Run(context.Background())
	if err == nil || len(f.calls) != 0 {
		t.Fatalf("err %v, calls %s", err, f.trace())
	}
	// A later record fails: the outcome stands, the warning says so.
	f = &fakeNode{link: "1", recordFailFrom: 3, recordErr: errors.New("state: no space left on device")}
	o, err := f.driver("2", "1").Run(context.Background())
	if err != nil || o.Status != extension.ActivationProven || len(o.Warnings) != 1 || !strings.Contains(o.Sentence(), "recording proven in the state failed") {
		t.Fatalf("%+v %v", o, err)
	}
	if (&Driver{}).check() == nil {
		t.Error("an empty driver must be refused")
	}
}

func TestDriverResume(t *testing.T) {
	ctx := context.Background()
	// Killed after the link switch: the link points at 2, nothing proven.
	for _, s := range []extension.ActivationStatus{extension.ActivationPending, extension.ActivationRefreshed, extension.ActivationUnproven} {
		f := &fakeNode{link: "2", merged: "1"}
		o, err := f.driver("2", "1").Resume(ctx, s, "")
		if err != nil || o.Status != extension.ActivationProven || slices.Contains(f.calls, "activate") {
			t.Errorf("%s: %+v %v (%s)", s, o, err, f.trace())
		}
		f = &fakeNode{link: "2", merged: "1", unmergeable: map[string]bool{"2": true}}
		if o, _ := f.driver("2", "1").Resume(ctx, s, ""); o.Status != extension.ActivationRolledBack || f.link != "1" {
			t.Errorf("%s, bad version: %+v", s, o)
		}
	}
	// Killed during the rollback: Revert (idempotent) and prove the previous.
	f := &fakeNode{link: "1", merged: ""}
	o, _ := f.driver("2", "1").Resume(ctx, extension.ActivationFailed, "systemd-sysext said: boom")
	if o.Status != extension.ActivationRolledBack || o.Reason != "systemd-sysext said: boom" || f.link != "1" || f.merged != "1" {
		t.Errorf("failed: %+v", o)
	}
	// Finished activations need nothing.
	for _, s := range []extension.ActivationStatus{extension.ActivationProven, extension.ActivationRolledBack} {
		f := &fakeNode{link: "2", merged: "2"}
		if o, _ := f.driver("2", "1").Resume(ctx, s, ""); o.Status != s || len(f.calls) != 0 {
			t.Errorf("%s: %+v %s", s, o, f.trace())
		}
	}
	// Offline, a pending activation only becomes unproven.
	f = &fakeNode{link: "2"}
	d := f.driver("2", "1")
	d.Offline = true
	if o, _ := d.Resume(ctx, extension.ActivationPending, ""); o.Status != extension.ActivationUnproven || len(f.calls) != 0 {
		t.Errorf("offline: %+v %s", o, f.trace())
	}
}

// ExpectImage reads the expectation from the image with fsimage; a proof
// against another version's merged file names the differing field.
func TestExpectImage(t *testing.T) {
	dir := t.TempDir()
	v1 := image(t, dir, "probe", "1", fmt.Sprintf(goodRelease, "1"))
	want, err := ExpectImage(context.Background(), "probe", "", v1.File)
	if err != nil || want.Version != "1" || want.Fields == nil {
		t.Fatalf("%+v %v", want, err)
	}
	if _, err := ExpectImage(context.Background(), "other", "", v1.File); err == nil || !strings.Contains(err.Error(), "extension-release.probe") {
		t.Errorf("wrong name: %v", err)
	}
	root := t.TempDir()
	rel := filepath.Join(root, "usr/lib/extension-release.d/extension-release.probe")
	must(t, os.MkdirAll(filepath.Dir(rel), 0o755))
	p := Prover{Root: root, Sysext: Sysext{Exec: fakeExec(map[string]string{"status --json=short --no-pager": `[{"hierarchy":"/usr","extensions":["probe"]}]`}, nil)}}
	must(t, os.WriteFile(rel, []byte("ID=_any\nSYSEXT_VERSION_ID=1\n"), 0o644))
	if err := p.Prove(context.Background(), want); err != nil {
		t.Errorf("same fields: %v", err)
	}
	must(t, os.WriteFile(rel, []byte("ID=_any\nSYSEXT_VERSION_ID=2\n"), 0o644))
	if err := p.Prove(context.Background(), want); err == nil || !strings.Contains(err.Error(), `SYSEXT_VERSION_ID="2", the installed image has "1"`) {
		t.Errorf("other version: %v", err)
	}
}

// The digest recorded at install (fsimage's ReleaseBytes of the image)
// proves the merged file byte for byte: a comment, a quote style or a
// trailing newline that the field comparison cannot see fails the proof.
func TestProveBytesFromImage(t *testing.T) {
	const rel = "# probe 1\nID=_any\nSYSEXT_VERSION_ID=1\n"
	v1 := image(t, t.TempDir(), "probe", "1", rel)
	info, err := fsimage.OpenMetadata(context.Background(), v1.File)
	if err != nil {
		t.Fatal(err)
	}
	byBytes := Expect{Name: "probe", Version: "1", Release: ReleaseDigest(info.ReleaseBytes)}
	byFields, err := ExpectImage(context.Background(), "probe", "1", v1.File)
	if err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	merged := filepath.Join(root, "usr/lib/extension-release.d/extension-release.probe")
	must(t, os.MkdirAll(filepath.Dir(merged), 0o755))
	p := Prover{Root: root, Sysext: Sysext{Exec: fakeExec(map[string]string{"status --json=short --no-pager": `[{"hierarchy":"/usr","extensions":["probe"]}]`}, nil)}}
	must(t, os.WriteFile(merged, []byte(rel), 0o644))
	if err := p.Prove(context.Background(), byBytes); err != nil {
		t.Fatalf("identical bytes: %v", err)
	}
	for _, other := range []string{
		"# probe 1 (rebuilt)\nID=_any\nSYSEXT_VERSION_ID=1\n", // another comment
		"ID=_any\nSYSEXT_VERSION_ID=1\n",                      // comment dropped
		"# probe 1\nID=\"_any\"\nSYSEXT_VERSION_ID=1\n",       // quoted
		"# probe 1\nID=_any\nSYSEXT_VERSION_ID=1",             // no final newline
	} {
		must(t, os.WriteFile(merged, []byte(other), 0o644))
		if err := p.Prove(context.Background(), byFields); err != nil {
			t.Fatalf("%q: the field comparison (old state) sees the same fields: %v", other, err)
		}
		err := p.Prove(context.Background(), byBytes)
		var pe *ProofError
		if !errors.As(err, &pe) || !strings.Contains(err.Error(), "another image's") {
			t.Errorf("%q: a byte difference must fail the proof, got %v", other, err)
		}
	}
}

// A rollback that keeps failing is retried by every run without the reason
// growing.
func TestDriverResumeFailedKeepsFirstCause(t *testing.T) {
	f := &fakeNode{link: "1", unmergeable: map[string]bool{"1": true, "2": true}}
	o, _ := f.driver("2", "1").Run(context.Background())
	for i := 0; i < 3; i++ {
		o, _ = f.driver("2", "1").Resume(context.Background(), o.Status, o.Reason)
	}
	if o.Status != extension.ActivationFailed || strings.Count(o.Reason, "after switching back") != 1 {
		t.Errorf("%+v", o)
	}
}
