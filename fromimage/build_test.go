package fromimage_test

import (
	"context"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/sysext/sysext/builder"
	"github.com/sysext/sysext/extension"
	"github.com/sysext/sysext/fromimage"
	"github.com/sysext/sysext/internal/testenv"
)

// Build binds the extension to the base, writes the confext next to it,
// says what it took and what it ignored, and leaves only the two images;
// when the extension's build fails, the confext goes too.
func TestBuild(t *testing.T) {
	testenv.RequireTool(t, "mksquashfs")
	fx := newFixture(t)
	img, _ := source(t, fx.derived)
	base, _ := source(t, fx.base)
	out := testenv.TempDirNoLeak(t, ".#")
	var progress, notices []string
	o := fromimage.BuildOptions{
		Options:  fromimage.Options{Image: img, Base: base, Arch: "x86-64", IgnoreDeletions: true, BaseOSRelease: true},
		Build:    builder.Options{Output: out + "/", Meta: extension.Metadata{Name: "newtool", Version: "2.5.1", Arch: "x86-64", ID: extension.AnyID}},
		Confext:  filepath.Join(out, "newtool-conf.raw"),
		Progress: func(l string) { progress = append(progress, l) },
		Notice:   func(l string) { notices = append(notices, l) },
	}
	res, err := fromimage.Build(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	osr := res.From.OSRelease
	if m := res.Image.Meta; m.ID != osr.Get("ID") || m.VersionID != osr.Get("VERSION_ID") || m.SysextLevel != "" {
		t.Fatalf("not bound to the base %v: %+v", osr, m)
	}
	if res.Confext != o.Confext || res.ConfextFiles != 1 {
		t.Fatalf("confext %q with %d files", res.Confext, res.ConfextFiles)
	}
	all := strings.Join(progress, "\n")
	for _, w := range []string{"shares 2 layers with its base", "bound to the base: ID=" + osr.Get("ID")} {
		if !strings.Contains(all, w) {
			t.Errorf("progress lacks %q:\n%s", w, all)
		}
	}
	if len(notices) != 1 || !strings.Contains(notices[0], "ignored deletions of base files: /usr/share/base/old") {
		t.Errorf("notices %q", notices)
	}
	if got := names(t, out); strings.Join(got, " ") != "newtool-2.5.1-x86-64.raw newtool-conf.raw" {
		t.Fatalf("output holds %v", got)
	}

	// A build that fails after the confext was written leaves neither.
	empty := testenv.TempDirNoLeak(t, ".#")
	o.Build.Output, o.Confext, o.Build.Compression = empty+"/", filepath.Join(empty, "conf.raw"), "lz4:99"
	o.Progress, o.Notice = nil, nil
	if _, err := fromimage.Build(context.Background(), o); err == nil {
		t.Fatal("a bad compression level built")
	}
	if got := names(t, empty); len(got) != 0 {
		t.Fatalf("a failed build left %v", got)
	}
}

func names(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	sort.Strings(out)
	return out
}
