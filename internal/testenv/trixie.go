package testenv

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// ToolsDir is where `make test-deps` puts the test peers:
// $SYSEXT_TOOLS_DIR, else ~/.cache/sysext/tools.
func ToolsDir() string {
	if d := os.Getenv("SYSEXT_TOOLS_DIR"); d != "" {
		return d
	}
	home, _ := os.UserHomeDir()
	return filepath.Join(home, ".cache", "sysext", "tools")
}

// TrixieTree returns the Debian 13 tree (systemd 257) the Makefile makes
// with debootstrap ($SYSEXT_TRIXIE overrides), after checking that it holds
// each of need (paths inside the tree); it skips (fails in CI) otherwise.
func TrixieTree(t testing.TB, need ...string) string {
	t.Helper()
	dir := os.Getenv("SYSEXT_TRIXIE")
	if dir == "" {
		dir = filepath.Join(ToolsDir(), "trixie-sysupdate")
	}
	for _, n := range append([]string{"usr/bin/systemd-sysext"}, need...) {
		if _, err := os.Stat(filepath.Join(dir, n)); err != nil {
			skipOrFail(t, "the Debian 13 tree "+dir+" has no "+n+" (make test-deps makes it)")
		}
	}
	return dir
}

// TrixieBin returns the directory of wrappers that run the Debian 13 tree's
// systemd-repart, systemd-dissect, erofs-utils 1.8 (mkfs.erofs, dump.erofs,
// fsck.erofs: lzma, deflate and zstd EROFS), mksquashfs and veritysetup on
// this host with the tree's own loader and libraries ($SYSEXT_TRIXIE_BIN
// overrides). Put it first on PATH to build as a host with systemd 257 does.
func TrixieBin(t testing.TB) string {
	t.Helper()
	dir := os.Getenv("SYSEXT_TRIXIE_BIN")
	if dir == "" {
		dir = filepath.Join(ToolsDir(), "trixie-bin")
	}
	for _, n := range []string{"systemd-repart", "mkfs.erofs", "dump.erofs", "fsck.erofs", "mksquashfs", "veritysetup"} {
		if _, err := os.Stat(filepath.Join(dir, n)); err != nil {
			skipOrFail(t, "no "+n+" wrapper in "+dir+" (make test-deps makes them)")
		}
	}
	return dir
}

// RunInTree runs script with sh chrooted into tree, inside a private mount
// namespace: the tree bound onto itself and made shared (so an overlay
// systemd-sysext mounts reaches the script), proc, /dev and /sys from the
// host, and a private tmpfs on its /run holding an empty /run/extensions.
// setup runs first, outside the chroot (with $TREE set), to copy files in
// under $TREE/run. Nothing it does is seen outside the namespace except
// device nodes the kernel creates in the host's /dev (see
// CleanupDeviceMapper).
func RunInTree(t testing.TB, tree, setup, script string, env ...string) (string, error) {
	t.Helper()
	RequireRoot(t)
	RequireTool(t, "unshare")
	full := "set -e\nmount --make-rprivate /\nmount --bind \"$TREE\" \"$TREE\"\nmount --make-rshared \"$TREE\"\n" +
		"mount -t proc proc \"$TREE/proc\"\nmount --rbind /dev \"$TREE/dev\"\nmount --rbind /sys \"$TREE/sys\"\n" +
		"mount -t tmpfs tmpfs \"$TREE/run\"\nmkdir -p \"$TREE/run/extensions\"\n" + setup + "\n" +
		"exec chroot \"$TREE\" /bin/sh -c " + shellQuote("set -e\n"+script)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "unshare", "-m", "--propagation", "private", "sh", "-c", full)
	cmd.Env = append(append(os.Environ(), "TREE="+tree, "PATH=/usr/sbin:/usr/bin:/sbin:/bin"), env...)
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	err := cmd.Run()
	return out.String(), err
}

// CleanupDeviceMapper removes, at the end of the test, the
// /dev/mapper/control node (and /dev/mapper) that systemd's or
// cryptsetup's first device-mapper attempt creates in the host's /dev on a
// kernel without device-mapper, if they were not there before.
func CleanupDeviceMapper(t testing.TB) {
	t.Helper()
	_, errCtl := os.Lstat("/dev/mapper/control")
	_, errDir := os.Lstat("/dev/mapper")
	t.Cleanup(func() {
		if errCtl != nil {
			os.Remove("/dev/mapper/control")
		}
		if errDir != nil {
			os.Remove("/dev/mapper") // only when empty
		}
	})
}

// HasDeviceMapper reports whether this kernel has device-mapper with the
// verity target, which a real dm-verity merge needs.
func HasDeviceMapper() bool {
	b, err := os.ReadFile("/proc/misc")
	if err != nil || !bytes.Contains(b, []byte("device-mapper")) {
		return false
	}
	if _, err := os.Stat("/sys/module/dm_verity"); err == nil {
		return true
	}
	return false
}
