package atomicfile

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func noTemps(t *testing.T, dir string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), TempPrefix) {
			t.Errorf("temp file left behind: %s", e.Name())
		}
	}
}

func TestWriteFileReplacesAndLeavesNoTemp(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "state.json")
	if err := WriteFile(target, []byte("one"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := WriteFile(target, []byte("two"), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(target)
	if err != nil || string(got) != "two" {
		t.Fatalf("content = %q, %v; want two", got, err)
	}
	fi, _ := os.Stat(target)
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode = %v, want 0600", fi.Mode().Perm())
	}
	noTemps(t, dir)
}

func TestCommitWithoutReplaceRefusesExisting(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "img.raw")
	if err := os.WriteFile(target, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := Create(target, 0o444)
	if err != nil {
		t.Fatal(err)
	}
	f.Write([]byte("new"))
	err = f.Commit(false)
	if !errors.Is(err, os.ErrExist) {
		t.Fatalf("Commit(false) over an existing file: err = %v, want ErrExist", err)
	}
	got, _ := os.ReadFile(target)
	if string(got) != "old" {
		t.Errorf("existing file changed to %q", got)
	}
	noTemps(t, dir)
}

// TestCommitUnsynced keeps Commit's rules (no replace without asking, the
// permissions, no temp left) without the fsyncs.
func TestCommitUnsynced(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "img.raw")
	for i, content := range []string{"one", "two"} {
		f, err := Create(target, 0o444)
		if err != nil {
			t.Fatal(err)
		}
		f.Write([]byte(content))
		if err := f.CommitUnsynced(i > 0); err != nil {
			t.Fatal(err)
		}
	}
	f, err := Create(target, 0o444)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.CommitUnsynced(false); !errors.Is(err, os.ErrExist) {
		t.Fatalf("CommitUnsynced(false) over an existing file: err = %v, want ErrExist", err)
	}
	got, err := os.ReadFile(target)
	if fi, _ := os.Stat(target); err != nil || string(got) != "two" || fi.Mode().Perm() != 0o444 {
		t.Fatalf("target %q (%v, %v), want two, 0444", got, err, fi.Mode().Perm())
	}
	noTemps(t, dir)
}

// TestAdopt: a file another program wrote in a private directory is
// committed like our own; a link there is refused and removed, and an
// aborted adoption leaves nothing.
func TestAdopt(t *testing.T) {
	dir := t.TempDir()
	work := filepath.Join(dir, TempPrefix+"work")
	if err := os.Mkdir(work, 0o700); err != nil {
		t.Fatal(err)
	}
	target := filepath.Join(dir, "img.raw")
	written := filepath.Join(work, "image")
	if err := os.WriteFile(written, []byte("image"), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := Adopt(target, written, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Commit(false); err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(target); err != nil || string(got) != "image" {
		t.Fatalf("target %q, %v", got, err)
	}
	if fi, _ := os.Stat(target); fi.Mode().Perm() != 0o644 {
		t.Errorf("mode %v, want 0644", fi.Mode().Perm())
	}

	os.WriteFile(written, []byte("second"), 0o600)
	f, err = Adopt(target, written, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	if _, err := os.Lstat(written); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("an aborted adoption left %s: %v", written, err)
	}

	if err := os.Symlink(target, written); err != nil {
		t.Fatal(err)
	}
	if _, err := Adopt(target, written, 0o644); err == nil {
		t.Fatal("Adopt of a symlink succeeded")
	}
	if _, err := os.Lstat(written); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a refused link is still at %s: %v", written, err)
	}
	if got, _ := os.ReadFile(target); string(got) != "image" {
		t.Errorf("target changed to %q", got)
	}
}

func TestAbortRemovesTemp(t *testing.T) {
	dir := t.TempDir()
	f, err := Create(filepath.Join(dir, "x"), 0o644)
	if err != nil {
		t.Fatal(err)
	}
	f.Write([]byte("partial"))
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "x")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("target exists after abort: %v", err)
	}
	noTemps(t, dir)
	if err := f.Commit(true); err == nil {
		t.Error("Commit after Close succeeded")
	}
}

func TestWriteFromCancelled(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := WriteFrom(ctx, filepath.Join(dir, "x"), strings.NewReader("data"), 0o644, true)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "x")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("target written despite cancel")
	}
	noTemps(t, dir)
}

func TestSymlinkSwap(t *testing.T) {
	dir := t.TempDir()
	link := filepath.Join(dir, "NAME.raw")
	if err := Symlink("a", link); err != nil {
		t.Fatal(err)
	}
	if err := Symlink("b", link); err != nil {
		t.Fatal(err)
	}
	got, err := os.Readlink(link)
	if err != nil || got != "b" {
		t.Fatalf("link = %q, %v; want b", got, err)
	}
	noTemps(t, dir)
}

func TestRemoveTemps(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, TempPrefix+"img.raw.123"), nil, 0o644)
	os.WriteFile(filepath.Join(dir, "keep.raw"), nil, 0o644)
	if err := RemoveTemps(dir); err != nil {
		t.Fatal(err)
	}
	noTemps(t, dir)
	if _, err := os.Stat(filepath.Join(dir, "keep.raw")); err != nil {
		t.Errorf("RemoveTemps removed a real file: %v", err)
	}
	if err := RemoveTemps(filepath.Join(dir, "missing")); err != nil {
		t.Errorf("RemoveTemps on a missing dir: %v", err)
	}
}

// TestRemoveStale removes what a killed writer left (".#BASE.<digits>",
// unlocked) and nothing else: a live writer's temp file, other programs'
// temp names, links, directories and real files stay.
func TestRemoveStale(t *testing.T) {
	dir := t.TempDir()
	p := func(n string) string { return filepath.Join(dir, n) }
	stale := []string{TempPrefix + "img.raw.123", TempPrefix + "other-1.0-x86-64.raw.4294967295"}
	for _, n := range stale {
		os.WriteFile(p(n), []byte("partial"), 0o644)
	}
	keep := []string{
		"img.raw",
		TempPrefix + "img.raw",                 // an editor's lock name
		TempPrefix + "img.raw0123456789abcdef", // systemd's temp name
		TempPrefix + "img.raw.12a",             // not os.CreateTemp's digits
		TempPrefix + ".5",                      // no base
		"img.raw.123",                          // no prefix
	}
	for _, n := range keep {
		os.WriteFile(p(n), nil, 0o644)
	}
	os.Symlink("/etc/passwd", p(TempPrefix+"link.raw.1"))
	os.Mkdir(p(TempPrefix+"dir.raw.1"), 0o755)
	keep = append(keep, TempPrefix+"link.raw.1", TempPrefix+"dir.raw.1")
	live, err := Create(p("live.raw"), 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()
	keep = append(keep, filepath.Base(live.TempName()))

	removed, err := RemoveStale(dir)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(removed, " ") != strings.Join(stale, " ") {
		t.Errorf("removed %q, want %q", removed, stale)
	}
	for _, n := range stale {
		if _, err := os.Lstat(p(n)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("stale %s still there: %v", n, err)
		}
	}
	for _, n := range keep {
		if _, err := os.Lstat(p(n)); err != nil {
			t.Errorf("%s removed: %v", n, err)
		}
	}
	// The live writer still commits.
	live.Write([]byte("done"))
	if err := live.Commit(false); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(p("live.raw")); string(b) != "done" {
		t.Errorf("live.raw = %q", b)
	}
	if removed, err := RemoveStale(filepath.Join(dir, "missing")); err != nil || removed != nil {
		t.Errorf("RemoveStale on a missing dir: %v %v", removed, err)
	}
}
