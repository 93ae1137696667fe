package flix_test

import (
	"context"
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/sysext/sysext/flix"
	"github.com/sysext/sysext/internal/testenv"
)

// privilegedRootfs is a rootfs with a static program that is set-user-ID
// (owned by uid 1000) and has cap_net_raw=ep, and another with the
// capability only.
func privilegedRootfs(t *testing.T) string {
	t.Helper()
	testenv.RequireRoot(t)
	testenv.RequireTool(t, "musl-gcc")
	src, rootfs := t.TempDir(), t.TempDir()
	os.MkdirAll(filepath.Join(rootfs, "usr/bin"), 0o755)
	os.WriteFile(filepath.Join(src, "s.c"), []byte("int main(void) { return 0; }\n"), 0o644)
	if out, err := exec.Command("musl-gcc", "-static", "-o", filepath.Join(rootfs, "usr/bin/ping"), filepath.Join(src, "s.c")).CombinedOutput(); err != nil {
		t.Fatalf("musl-gcc: %v %s", err, out)
	}
	caps := make([]byte, 20)
	binary.LittleEndian.PutUint32(caps[0:], 0x02000001) // revision 2, effective
	binary.LittleEndian.PutUint32(caps[4:], 1<<13)      // CAP_NET_RAW
	ping, capped := filepath.Join(rootfs, "usr/bin/ping"), filepath.Join(rootfs, "usr/bin/capped")
	b, _ := os.ReadFile(ping)
	os.WriteFile(capped, b, 0o755)
	os.Chown(ping, 1000, 1000)
	if err := os.Chmod(ping, 0o755|os.ModeSetuid); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{ping, capped} {
		if err := unix.Setxattr(p, "security.capability", caps, 0); err != nil {
			t.Fatal(err)
		}
	}
	return rootfs
}

// TestFlatwrapDropsPrivileges: flatwrap hard-links the rootfs into its
// copy, and a linked file kept its security.capability, so an image
// shipped cap_net_raw to any user of the host (issue 19, point 2). The
// image has no set-ID bits and no capabilities but for a program named
// with KeepPrivileges (a path in the rootfs).
func TestFlatwrapDropsPrivileges(t *testing.T) {
	testenv.RequireTool(t, "mksquashfs")
	rootfs := privilegedRootfs(t)
	var stderr strings.Builder
	opts := flix.Options{Rootfs: rootfs, Name: "w", Programs: []flix.Program{{Path: "/usr/bin/ping"}}, Stderr: &stderr}
	res, err := flix.Flatwrap(context.Background(), opts, buildOpts(t, "w"))
	if err != nil {
		t.Fatal(err)
	}
	files := testenv.ImageFiles(t, res.Path)
	for _, p := range []string{"usr/lib/sysext-flatwrap/w/usr/bin/ping", "usr/lib/sysext-flatwrap/w/usr/bin/capped"} {
		if f := files[p]; f.Mode != "755" || f.Caps != "" {
			t.Errorf("%s: mode %s caps %q in the image", p, f.Mode, f.Caps)
		}
	}
	if !strings.Contains(stderr.String(), "/usr/bin/capped, /usr/bin/ping") || !strings.Contains(stderr.String(), "--keep-privileges") {
		t.Errorf("no warning: %q", stderr.String())
	}
	if fi, _ := os.Stat(filepath.Join(rootfs, "usr/bin/ping")); fi.Mode()&os.ModeSetuid == 0 {
		t.Fatal("the rootfs was changed")
	}

	opts.KeepPrivileges = []string{"/usr/bin/ping"}
	res, err = flix.Flatwrap(context.Background(), opts, buildOpts(t, "w"))
	if err != nil {
		t.Fatal(err)
	}
	files = testenv.ImageFiles(t, res.Path)
	if f := files["usr/lib/sysext-flatwrap/w/usr/bin/ping"]; f.Mode != "4755" || f.Caps != "cap_net_raw=ep" {
		t.Errorf("kept ping: mode %s caps %q", f.Mode, f.Caps)
	}
	if f := files["usr/lib/sysext-flatwrap/w/usr/bin/capped"]; f.Caps != "" {
		t.Errorf("capped kept %q", f.Caps)
	}

	opts.KeepPrivileges = []string{"/usr/bin/nothere"}
	if _, err := flix.Flatwrap(context.Background(), opts, buildOpts(t, "w")); err == nil || !strings.Contains(err.Error(), "--keep-privileges /usr/bin/nothere") {
		t.Fatalf("a missing path to keep: %v", err)
	}
}

// TestFlixDropsPrivileges: flix copies programs without their set-ID bits
// and capabilities, and gives them back to a program named in
// KeepPrivileges; a path that is not a program packed is an error.
func TestFlixDropsPrivileges(t *testing.T) {
	testenv.RequireTool(t, "mksquashfs")
	testenv.RequireTool(t, "patchelf")
	rootfs := privilegedRootfs(t)
	opts := flix.Options{Rootfs: rootfs, Name: "f", Programs: []flix.Program{{Path: "/usr/bin/ping"}, {Path: "/usr/bin/capped"}}}
	res, err := flix.Flix(context.Background(), opts, buildOpts(t, "f"))
	if err != nil {
		t.Fatal(err)
	}
	files := testenv.ImageFiles(t, res.Path)
	for _, p := range []string{"usr/bin/ping", "usr/bin/capped"} {
		if f := files[p]; f.Mode != "755" || f.Caps != "" {
			t.Errorf("%s: mode %s caps %q", p, f.Mode, f.Caps)
		}
	}
	opts.KeepPrivileges = []string{"/usr/bin/ping"}
	res, err = flix.Flix(context.Background(), opts, buildOpts(t, "f"))
	if err != nil {
		t.Fatal(err)
	}
	files = testenv.ImageFiles(t, res.Path)
	if f := files["usr/bin/ping"]; f.Mode != "4755" || f.Caps != "cap_net_raw=ep" {
		t.Errorf("kept ping: mode %s caps %q", f.Mode, f.Caps)
	}
	if f := files["usr/bin/capped"]; f.Caps != "" {
		t.Errorf("capped kept %q", f.Caps)
	}
	opts.Programs = opts.Programs[1:]
	if _, err := flix.Flix(context.Background(), opts, buildOpts(t, "f")); err == nil || !strings.Contains(err.Error(), "not one of the programs") {
		t.Fatalf("keeping a file that is not packed: %v", err)
	}
}
