package activate

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sysext/sysext/extension"
	"github.com/sysext/sysext/fsimage"
	"github.com/sysext/sysext/internal/testenv"
)

// A plain Debian host's mount table (as on the CI machines).
const plainMountInfo = `22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw,discard
28 27 0:25 / /mnt/with\040space ro - tmpfs tmp ro
`

// bootc with a composefs root and a transient /etc.
const bootcMountInfo = `60 1 0:30 / / ro,relatime shared:1 - overlay composefs ro,lowerdir+=/run/composefs,datadir+=/sysroot/composefs/objects
61 60 0:31 / /etc rw,relatime shared:2 - overlay overlay rw,lowerdir=/sysroot/etc,upperdir=/run/etc/upper,workdir=/run/etc/work
62 60 252:3 / /sysroot ro,relatime - xfs /dev/vda4 rw
`

// A composefs root with a transient root overlay on it (Silverblue-like):
// /usr already sits two overlays deep.
const stackedMountInfo = `60 1 0:30 / / ro,relatime - overlay composefs ro,lowerdir+=/run/composefs
70 60 0:40 / / rw,relatime - overlay transient rw,lowerdir=/,upperdir=/run/t/u,workdir=/run/t/w
`

// What systemd-sysext's own merge adds, which a refresh removes first.
const mergedMountInfo = plainMountInfo + `93 27 0:41 / /usr ro,relatime shared:22 - overlay sysext ro,lowerdir=/run/systemd/sysext/meta/usr:/run/systemd/sysext/extensions/hello/usr:/usr
`

func TestParseMountInfo(t *testing.T) {
	m, err := ParseMountInfo([]byte(plainMountInfo))
	if err != nil {
		t.Fatal(err)
	}
	if len(m) != 3 || m[1].Point != "/" || m[1].FSType != "ext4" || m[1].Source != "/dev/vda" || m[2].Point != "/mnt/with space" {
		t.Fatalf("%+v", m)
	}
	for _, bad := range []string{"garbage\n", "1 2 3 4 5 6 7\n", "x 1 0:1 / / rw - ext4 /dev/x rw\n"} {
		if _, err := ParseMountInfo([]byte(bad)); err == nil || !strings.Contains(err.Error(), "line 1") {
			t.Errorf("%q: want a line error, got %v", bad, err)
		}
	}
}

func stackingOf(t *testing.T, mountinfo string) Stacking {
	t.Helper()
	m, err := ParseMountInfo([]byte(mountinfo))
	if err != nil {
		t.Fatal(err)
	}
	return AnalyzeStacking(m)
}

func TestAnalyzeStacking(t *testing.T) {
	if s := stackingOf(t, plainMountInfo); s.Depth() != 0 || s.EtcOverlay != "" {
		t.Errorf("plain: %+v", s)
	}
	if s := stackingOf(t, mergedMountInfo); s.Depth() != 0 {
		t.Errorf("systemd-sysext's own overlay must not count: %+v", s)
	}
	if s := stackingOf(t, bootcMountInfo); s.Depth() != 1 || s.EtcOverlay == "" {
		t.Errorf("bootc: %+v", s)
	}
	if s := stackingOf(t, stackedMountInfo); s.Depth() != 2 {
		t.Errorf("stacked: %+v", s)
	}
}

// goodFacts is a plain host with everything the images need.
func goodFacts(t *testing.T, mountinfo string) Facts {
	return Facts{
		Filesystems:    map[string]bool{"ext4": true, "squashfs": true, "erofs": true, "overlay": true},
		Modules:        map[string]bool{},
		Stacking:       stackingOf(t, mountinfo),
		SystemdVersion: 257,
	}
}

var squashImage = Image{Name: "docker", Format: fsimage.Squashfs, Meta: extension.Metadata{Name: "docker", ReloadManager: true}}

func TestPreflightPlainPasses(t *testing.T) {
	for _, strict := range []bool{false, true} {
		r := Preflight(goodFacts(t, plainMountInfo), []Image{squashImage, {Name: "tools", Format: fsimage.EROFS}}, strict)
		if len(r.Findings) != 0 || r.Err() != nil {
			t.Errorf("strict=%v: %+v", strict, r.Findings)
		}
	}
}

func TestPreflightStackedRoot(t *testing.T) {
	for _, mi := range []string{stackedMountInfo, bootcMountInfo} {
		r := Preflight(goodFacts(t, mi), []Image{squashImage}, false)
		if r.Err() != nil || len(r.Warnings()) != 1 || r.Warnings()[0].Check != CheckStacking {
			t.Fatalf("without --strict: want one stacking warning, got %+v (err %v)", r.Findings, r.Err())
		}
		r = Preflight(goodFacts(t, mi), []Image{squashImage}, true)
		err := r.Err()
		var pe *PreflightError
		if err == nil || !asPreflight(err, &pe) || len(pe.Refusals) != 1 {
			t.Fatalf("--strict: want a refusal, got %v", err)
		}
		for _, want := range []string{"overlay", "systemd-sysext-sysroot.service", "nothing was changed"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("%q does not name %q", err, want)
			}
		}
	}
}

func asPreflight(err error, pe **PreflightError) bool {
	p, ok := err.(*PreflightError)
	*pe = p
	return ok
}

func TestPreflightKernel(t *testing.T) {
	f := goodFacts(t, plainMountInfo)
	delete(f.Filesystems, "squashfs")
	r := Preflight(f, []Image{squashImage}, false)
	err := r.Err()
	if err == nil || !strings.Contains(err.Error(), "cannot mount squashfs") || !strings.Contains(err.Error(), "modprobe squashfs") || !strings.Contains(err.Error(), "--format erofs") {
		t.Fatalf("want a refusal naming the filesystem and the way out, got %v", err)
	}
	// A loadable module is enough: mount(2) loads it.
	f.Modules["squashfs"] = true
	if err := Preflight(f, []Image{squashImage}, true).Err(); err != nil {
		t.Errorf("with the module: %v", err)
	}
	// Offline, the running kernel is not the one that will merge: warn only.
	delete(f.Modules, "squashfs")
	f.Offline = true
	r = Preflight(f, []Image{squashImage}, false)
	if r.Err() != nil || len(r.Warnings()) != 1 {
		t.Errorf("offline: %+v", r.Findings)
	}
	f = goodFacts(t, plainMountInfo)
	delete(f.Filesystems, "overlay")
	if err := Preflight(f, nil, false).Err(); err == nil || !strings.Contains(err.Error(), "overlayfs") || !strings.Contains(err.Error(), "modprobe overlay") {
		t.Errorf("no overlayfs: %v", err)
	}
}

func TestPreflightSystemd(t *testing.T) {
	f := goodFacts(t, plainMountInfo)
	f.SystemdVersion = 252
	r := Preflight(f, []Image{squashImage, {Name: "tools", Format: fsimage.EROFS}}, false)
	if w := r.Warnings(); len(w) != 1 || !strings.Contains(w[0].Cause, "EXTENSION_RELOAD_MANAGER=1 needs systemd 255") || !strings.Contains(w[0].Fix, "daemon-reload") {
		t.Fatalf("systemd 252: %+v", r.Findings)
	}
	if Preflight(f, []Image{squashImage}, true).Err() == nil {
		t.Error("--strict must refuse")
	}
	f.SystemdVersion = 249
	r = Preflight(f, []Image{{Name: "tools", Format: fsimage.EROFS}}, false)
	if w := r.Warnings(); len(w) != 1 || !strings.Contains(w[0].Fix, "--format squashfs") {
		t.Errorf("EROFS on 249: %+v", r.Findings)
	}
}

func TestGatherFromFiles(t *testing.T) {
	dir := t.TempDir()
	write := func(p, s string) string {
		full := filepath.Join(dir, p)
		must(t, os.MkdirAll(filepath.Dir(full), 0o755))
		must(t, os.WriteFile(full, []byte(s), 0o644))
		return full
	}
	fsFile := write("filesystems", "nodev\tsysfs\n\text4\nnodev\toverlay\n")
	mi := write("mountinfo", stackedMountInfo)
	write("modules/modules.dep", "kernel/fs/squashfs/squashfs.ko.zst:\nkernel/fs/erofs/erofs.ko.xz: kernel/lib/lz4.ko\n")
	write("root/usr/lib64/systemd/libsystemd-shared-256.11-1.fc41.so", "")
	f := Gather(context.Background(), System{Root: filepath.Join(dir, "root"), ProcFilesystems: fsFile, MountInfo: mi, ModulesDir: filepath.Join(dir, "modules")})
	if !f.Filesystems["overlay"] || f.Filesystems["squashfs"] || !f.Modules["squashfs"] || !f.Modules["erofs"] || f.Modules["overlay"] {
		t.Errorf("filesystems %v modules %v", f.Filesystems, f.Modules)
	}
	if f.SystemdVersion != 256 || f.Stacking.Depth() != 2 || !f.Offline || len(f.Unknown) != 0 {
		t.Errorf("%+v", f)
	}
	// Unreadable inputs are warnings, never fatal; an unknown systemd
	// version only where an extension needs it.
	f = Gather(context.Background(), System{Root: dir, ProcFilesystems: filepath.Join(dir, "none"), MountInfo: fsFile, ModulesDir: dir})
	if len(f.Unknown) != 2 || f.SystemdVersion != 0 || f.SystemdUnknown == "" {
		t.Fatalf("want 2 unknown facts and an unknown systemd, got %q %d %q", f.Unknown, f.SystemdVersion, f.SystemdUnknown)
	}
	r := Preflight(f, []Image{squashImage}, false) // EXTENSION_RELOAD_MANAGER=1: the version matters
	if r.Err() != nil || len(r.Warnings()) != 3 {
		t.Errorf("%+v", r.Findings)
	}
}

// TestUnknownSystemdWarnsOnlyWhenItMatters: a root whose systemd version
// cannot be read (the node demo's bare root) warns nothing for a plain
// squashfs extension, and one line for any number of extensions whose
// merge depends on the version.
func TestUnknownSystemdWarnsOnlyWhenItMatters(t *testing.T) {
	f := Facts{Filesystems: map[string]bool{"overlay": true, "squashfs": true, "erofs": true}, SystemdUnknown: "no libsystemd-shared"}
	plain := squashImage
	plain.Meta.ReloadManager = false
	if r := Preflight(f, []Image{plain, plain}, false); len(r.Findings) != 0 {
		t.Fatalf("plain squashfs extensions: %+v", r.Findings)
	}
	reload := squashImage
	reload.Meta.ReloadManager = true
	erofs := Image{Name: "tools", Format: fsimage.EROFS}
	r := Preflight(f, []Image{reload, erofs, reload}, false)
	if len(r.Findings) != 1 || r.Findings[0].Check != CheckSystemd || !strings.Contains(r.Findings[0].Cause, "EXTENSION_RELOAD_MANAGER") || !strings.Contains(r.Findings[0].Cause, "EROFS") {
		t.Fatalf("want one systemd warning: %+v", r.Findings)
	}
}

// TestSystemdVersionFromPrograms: a root whose libsystemd-shared is not
// where the globs look still tells its version through the program that
// links it: the host's own systemd binary, copied into a bare root. And
// on the host the version is the one systemd itself reports.
func TestSystemdVersionFromPrograms(t *testing.T) {
	sysext := testenv.RequireTool(t, "systemd-sysext")
	host, err := os.ReadFile("/usr/lib/systemd/systemd")
	if err != nil {
		t.Fatalf("a host with systemd-sysext has no systemd program: %v", err)
	}
	out, err := exec.Command(sysext, "--version").Output()
	if err != nil {
		t.Fatalf("systemd-sysext --version: %v", err)
	}
	var want int
	if _, err := fmt.Sscanf(string(out), "systemd %d", &want); err != nil {
		t.Fatalf("systemd-sysext --version said %q", out)
	}
	if v, err := SystemdVersion("/"); v != want || err != nil {
		t.Errorf("host: %d %v, systemd says %d", v, err, want)
	}
	root := t.TempDir()
	p := filepath.Join(root, "usr/lib/systemd/systemd")
	must(t, os.MkdirAll(filepath.Dir(p), 0o755))
	must(t, os.WriteFile(p, host, 0o755))
	if v, err := SystemdVersion(root); v != want || err != nil {
		t.Errorf("from the program's DT_NEEDED: %d %v, want %d", v, err, want)
	}
	// A link is not followed out of the root.
	must(t, os.Remove(p))
	must(t, os.Symlink("/usr/lib/systemd/systemd", p))
	if v, err := SystemdVersion(root); v != 0 || err == nil || !strings.Contains(err.Error(), "cannot tell") {
		t.Errorf("through a link: %d %v", v, err)
	}
}

// The running host (Debian 12 on CI): its real files pass.
func TestCheckHost(t *testing.T) {
	if _, err := os.Stat("/proc/self/mountinfo"); err != nil {
		t.Skip("no /proc")
	}
	f := Gather(context.Background(), System{})
	if len(f.Filesystems) == 0 {
		t.Fatalf("%+v", f)
	}
	if v, err := SystemdVersion("/"); err == nil && f.SystemdVersion != v {
		t.Errorf("systemd %d, want %d", f.SystemdVersion, v)
	}
}

func TestSystemdVersion(t *testing.T) {
	dir := t.TempDir()
	if _, err := SystemdVersion(dir); err == nil || !strings.Contains(err.Error(), "libsystemd-shared") {
		t.Errorf("empty root: %v", err)
	}
	p := filepath.Join(dir, "usr/lib/x86_64-linux-gnu/systemd/libsystemd-shared-252.so")
	must(t, os.MkdirAll(filepath.Dir(p), 0o755))
	must(t, os.WriteFile(p, nil, 0o644))
	if v, err := SystemdVersion(dir); v != 252 || err != nil {
		t.Errorf("got %d %v", v, err)
	}
	// Before 257 the refresh goes through the service manager; the test
	// only compares the command line, it never runs it.
	restart := "restart systemd-sysext.service"
	if c := RefreshCommand(252); !strings.HasSuffix(strings.Join(c, " "), restart) {
		t.Errorf("252: %v", c)
	}
	if c := RefreshCommand(0); !strings.HasSuffix(strings.Join(c, " "), restart) {
		t.Errorf("unknown: %v", c)
	}
	if c := RefreshCommand(257); strings.Join(c, " ") != "systemd-sysext refresh" {
		t.Errorf("257: %v", c)
	}
}
