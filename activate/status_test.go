package activate

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sysext/sysext/store"
)

// statusRoot makes a node root the way the store leaves it: state file,
// stored images, links; and a merged /usr as systemd-sysext would show it.
type statusRoot struct {
	t    *testing.T
	root string
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

func entry(name, version, status, reason string) *store.Entry {
	return &store.Entry{Name: name, Active: store.Install{Version: version, File: name + "-" + version + "-x86-64.raw"},
		Activation: store.Activation{Status: status, Reason: reason}}
}

func readStatus(t *testing.T, root string, merged string) *StatusReport {
	t.Helper()
	r, err := ReadStatus(context.Background(), StatusOptions{
		Store:      store.Options{Root: root},
		AskSystemd: merged != "",
		Sysext:     Sysext{Exec: fakeExec(map[string]string{"status --json=short --no-pager": merged}, nil)},
	})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func find(r *StatusReport, name string) ExtensionStatus {
	for _, e := range r.Extensions {
		if e.Name == name {
			return e
		}
	}
	return ExtensionStatus{}
}

func TestStatusAgrees(t *testing.T) {
	r := statusRoot{t, t.TempDir()}
	r.state(entry("hello", "2", "proven", ""))
	r.link("hello", "hello-2-x86-64.raw")
	r.write("usr/lib/extension-release.d/extension-release.hello", "ID=_any\nSYSEXT_VERSION_ID=2\n")
	rep := readStatus(t, r.root, `[{"hierarchy":"/usr","extensions":["hello","vendor"]}]`)
	if rep.Differences() != 0 || len(rep.Errors) != 0 {
		t.Fatalf("%+v", rep)
	}
	h := find(rep, "hello")
	if !h.Installed || !h.Merged || h.MergedVersion != "2" || h.Active != "2" || h.Path != "/var/lib/extensions/hello.raw" {
		t.Errorf("%+v", h)
	}
	// An extension someone else merged is shown, not flagged.
	if v := find(rep, "vendor"); v.Installed || !v.Merged || len(v.Differences) != 0 {
		t.Errorf("%+v", v)
	}
}

func TestStatusFlagsDifferences(t *testing.T) {
	r := statusRoot{t, t.TempDir()}
	r.state(
		entry("stale", "2", "proven", ""),                 // merged version 1
		entry("pending", "1", "pending", ""),              // killed before the proof
		entry("back", "1", "rolled-back", "boom"),         // rolled back
		entry("shadowed", "1", "proven", ""),              // /etc/extensions wins
		entry("gone", "1", "proven", ""),                  // no link
		entry("moved", "2", "proven", ""),                 // link points at another file
		entry("offline", "1", "unproven", UnprovenReason), // --root
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
		e := find(rep, name)
		if !strings.Contains(strings.Join(e.Differences, "\n"), w) {
			t.Errorf("%s: want %q in %q", name, w, e.Differences)
		}
	}
	if e := find(rep, "back"); len(e.Differences) != 0 || len(e.Notes) != 1 || !strings.Contains(e.Notes[0], "rolled back: boom") {
		t.Errorf("a past rollback is a note, not a difference: %+v", e)
	}
	// With --root an unproven activation is expected: a note.
	if e := find(readStatus(t, r.root, ""), "offline"); len(e.Differences) != 0 || len(e.Notes) != 1 {
		t.Errorf("offline view of an unproven activation: %+v", e)
	}
	if e := find(rep, "pending"); !strings.Contains(strings.Join(e.Differences, "\n"), "not merged") {
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
	h := find(rep, "hello")
	if !h.Merged || h.Path != "/var/lib/extensions/hello.raw" || !strings.Contains(strings.Join(h.Differences, "\n"), "not in its state") {
		t.Errorf("%+v", h)
	}
	// Offline (--root): no systemd view, no merge differences.
	rep = readStatus(t, r.root, "")
	if rep.Online || find(rep, "hello").Merged {
		t.Errorf("%+v", rep)
	}
}
