package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sysext/sysext/activate"
	"github.com/sysext/sysext/extension"
	"github.com/sysext/sysext/internal/testenv"
	"github.com/sysext/sysext/store"
)

// statusRoot makes a node root the way the store leaves it: state file,
// stored images, links; and a merged /usr as systemd-sysext would show it.
type statusRoot struct {
	t    *testing.T
	root string
}

// fakeSysext answers `systemd-sysext status --json=short` with merged.
func fakeSysext(merged string) func(ctx context.Context, name string, args ...string) ([]byte, []byte, error) {
	return func(_ context.Context, _ string, args ...string) ([]byte, []byte, error) {
		if strings.Join(args, " ") == "status --json=short --no-pager" {
			return []byte(merged), nil, nil
		}
		return nil, []byte("unexpected command"), errors.New("exit status 1")
	}
}

func (r statusRoot) write(p, s string) {
	full := filepath.Join(r.root, p)
	must(r.t, os.MkdirAll(filepath.Dir(full), 0o755))
	must(r.t, os.WriteFile(full, []byte(s), 0o644))
}

func (r statusRoot) link(name, file string) {
	p := filepath.Join(r.root, "var/lib/extensions", name+".raw")
	must(r.t, os.MkdirAll(filepath.Dir(p), 0o755))
	must(r.t, os.Symlink(filepath.Join("/var/lib/sysext/store", name, file), p))
}

func (r statusRoot) state(entries ...*store.Entry) {
	st := store.State{Schema: store.SchemaVersion, Extensions: map[string]*store.Entry{}}
	for _, e := range entries {
		st.Extensions[e.Name] = e
		r.write(filepath.Join("var/lib/sysext/store", e.Name, e.Active.File), "image")
	}
	b, err := json.Marshal(st)
	must(r.t, err)
	r.write("var/lib/sysext/state.json", string(b))
}

func statusEntry(name, version string, status extension.ActivationStatus, reason string) *store.Entry {
	return &store.Entry{Name: name, Active: store.Install{Version: version, File: name + "-" + version + "-x86-64.raw"},
		Activation: store.Activation{Status: status, Reason: reason}}
}

func readStatus(t *testing.T, root string, merged string) *StatusReport {
	t.Helper()
	r, err := ReadStatus(context.Background(), StatusOptions{
		Store:      store.Options{Root: root},
		AskSystemd: merged != "",
		Sysext:     activate.Sysext{Exec: fakeSysext(merged)},
	})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func findStatus(r *StatusReport, name string) ExtensionStatus {
	for _, e := range r.Extensions {
		if e.Name == name {
			return e
		}
	}
	return ExtensionStatus{}
}

func TestStatusAgrees(t *testing.T) {
	r := statusRoot{t, t.TempDir()}
	r.state(statusEntry("hello", "2", "proven", ""))
	r.link("hello", "hello-2-x86-64.raw")
	r.write("usr/lib/extension-release.d/extension-release.hello", "ID=_any\nSYSEXT_VERSION_ID=2\n")
	rep := readStatus(t, r.root, `[{"hierarchy":"/usr","extensions":["hello","vendor"]}]`)
	if rep.Differences() != 0 || len(rep.Errors) != 0 {
		t.Fatalf("%+v", rep)
	}
	h := findStatus(rep, "hello")
	if !h.Installed || !h.Merged || h.MergedVersion != "2" || h.Active != "2" || h.Path != "/var/lib/extensions/hello.raw" {
		t.Errorf("%+v", h)
	}
	// An extension someone else merged is shown, not flagged.
	if v := findStatus(rep, "vendor"); v.Installed || !v.Merged || len(v.Differences) != 0 {
		t.Errorf("%+v", v)
	}
}

func TestStatusFlagsDifferences(t *testing.T) {
	r := statusRoot{t, t.TempDir()}
	r.state(
		statusEntry("stale", "2", "proven", ""),                          // merged version 1
		statusEntry("pending", "1", "pending", ""),                       // killed before the proof
		statusEntry("back", "1", "rolled-back", "boom"),                  // rolled back
		statusEntry("shadowed", "1", "proven", ""),                       // /etc/extensions wins
		statusEntry("gone", "1", "proven", ""),                           // no link
		statusEntry("moved", "2", "proven", ""),                          // link points at another file
		statusEntry("offline", "1", "unproven", activate.UnprovenReason), // --root
	)
	r.link("stale", "stale-2-x86-64.raw")
	r.link("pending", "pending-1-x86-64.raw")
	r.link("back", "back-1-x86-64.raw")
	r.link("shadowed", "shadowed-1-x86-64.raw")
	r.link("moved", "moved-1-x86-64.raw")
	r.link("offline", "offline-1-x86-64.raw")
	r.write("etc/extensions/shadowed.raw", "someone else's")
	r.write("usr/lib/extension-release.d/extension-release.stale", "ID=_any\nSYSEXT_VERSION_ID=1\n")
	rep := readStatus(t, r.root, `[{"hierarchy":"/usr","extensions":["stale","back","shadowed","moved","offline"]}]`)
	want := map[string]string{
		"stale":    "version 1 is merged but 2 is active",
		"pending":  "was not proven (pending)",
		"shadowed": "/etc/extensions/shadowed.raw, which shadows",
		"gone":     "is missing",
		"moved":    "points at /var/lib/sysext/store/moved/moved-1-x86-64.raw",
		"offline":  "activated offline",
	}
	for name, w := range want {
		e := findStatus(rep, name)
		if !strings.Contains(strings.Join(e.Differences, "\n"), w) {
			t.Errorf("%s: want %q in %q", name, w, e.Differences)
		}
	}
	if e := findStatus(rep, "back"); len(e.Differences) != 0 || len(e.Notes) != 1 || !strings.Contains(e.Notes[0], "rolled back: boom") {
		t.Errorf("a past rollback is a note, not a difference: %+v", e)
	}
	// With --root an unproven activation is expected: a note.
	if e := findStatus(readStatus(t, r.root, ""), "offline"); len(e.Differences) != 0 || len(e.Notes) != 1 {
		t.Errorf("offline view of an unproven activation: %+v", e)
	}
	if e := findStatus(rep, "pending"); !strings.Contains(strings.Join(e.Differences, "\n"), "not merged") {
		t.Errorf("pending is not merged: %q", e.Differences)
	}
}

// A corrupt state file does not hide what systemd merged.
func TestStatusCorruptState(t *testing.T) {
	r := statusRoot{t, t.TempDir()}
	r.write("var/lib/sysext/state.json", "{not json")
	r.write("var/lib/sysext/store/hello/hello-1-x86-64.raw", "image")
	r.link("hello", "hello-1-x86-64.raw")
	rep := readStatus(t, r.root, `[{"hierarchy":"/usr","extensions":["hello"]}]`)
	if len(rep.Errors) != 1 || !strings.Contains(rep.Errors[0], "unreadable") {
		t.Fatalf("errors %q", rep.Errors)
	}
	h := findStatus(rep, "hello")
	if !h.Merged || h.Path != "/var/lib/extensions/hello.raw" || !strings.Contains(strings.Join(h.Differences, "\n"), "not in its state") {
		t.Errorf("%+v", h)
	}
	// Offline (--root): no systemd view, no merge differences.
	rep = readStatus(t, r.root, "")
	if rep.Online || findStatus(rep, "hello").Merged {
		t.Errorf("%+v", rep)
	}
}

const envStatusChild = "SYSEXT_STATUS_CHILD"

// TestStatusChild prints ReadStatus of the running system as JSON; it runs
// only inside TestStatusWithRealMerge's namespace.
func TestStatusChild(t *testing.T) {
	if os.Getenv(envStatusChild) == "" {
		t.Skip("only run as TestStatusWithRealMerge's child")
	}
	rep, err := ReadStatus(context.Background(), StatusOptions{AskSystemd: true})
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(rep)
	must(t, err)
	fmt.Printf("STATUS %s\n", b)
}

// sysext status on a running system: the node's state (a /var bound over
// the host's inside the namespace, as testing.md says), the links that
// systemd-sysext follows, and the real systemd-sysext's merge.
func TestStatusWithRealMerge(t *testing.T) {
	testenv.RequireRoot(t)
	root := nodeRoot(t, debianRelease)
	img := makeImage(t, meta("probe", "1"), 0)
	file := filepath.Base(img)
	storeDir := filepath.Join(root, "var/lib/sysext/store/probe")
	must(t, os.MkdirAll(storeDir, 0o755))
	must(t, os.MkdirAll(filepath.Join(root, "var/lib/extensions"), 0o755))
	must(t, os.Rename(img, filepath.Join(storeDir, file)))
	must(t, os.Symlink("/var/lib/sysext/store/probe/"+file, filepath.Join(root, "var/lib/extensions/probe.raw")))
	st := store.State{Schema: store.SchemaVersion, Extensions: map[string]*store.Entry{
		"probe": {Name: "probe", Active: store.Install{Version: "1", File: file}, Activation: store.Activation{Status: extension.ActivationProven}},
		"ghost": {Name: "ghost", Active: store.Install{Version: "3", File: "ghost-3-x86-64.raw"}, Activation: store.Activation{Status: extension.ActivationProven}},
	}}
	b, err := json.Marshal(st)
	must(t, err)
	must(t, os.WriteFile(filepath.Join(root, "var/lib/sysext/state.json"), b, 0o644))
	out := mergeAndRun(t, root, envStatusChild+"=1 "+testenv.ShellQuote(os.Args[0])+" -test.run=^TestStatusChild$ -test.count=1\necho TABLE\nsystemd-sysext status --no-pager\n")
	// The table fallback reads what this systemd really prints.
	if _, table, ok := strings.Cut(out, "TABLE\n"); !ok {
		t.Errorf("no table:\n%s", out)
	} else if m, err := activate.ParseStatusText([]byte(table)); err != nil || !m.Has("probe") {
		t.Errorf("table %q: %v %v", table, m, err)
	}
	var rep StatusReport
	for _, l := range strings.Split(out, "\n") {
		if rest, ok := strings.CutPrefix(l, "STATUS "); ok {
			must(t, json.Unmarshal([]byte(rest), &rep))
		}
	}
	if !rep.Online || len(rep.Extensions) != 2 {
		t.Fatalf("%+v\n%s", rep, out)
	}
	for _, e := range rep.Extensions {
		switch e.Name {
		case "probe":
			if !e.Merged || e.MergedVersion != "1" || e.Path != "/var/lib/extensions/probe.raw" || len(e.Differences) != 0 {
				t.Errorf("probe: %+v", e)
			}
		case "ghost":
			d := strings.Join(e.Differences, "\n")
			if e.Merged || !strings.Contains(d, "is missing") || !strings.Contains(d, "not merged") {
				t.Errorf("ghost: %+v", e)
			}
		}
	}
}
