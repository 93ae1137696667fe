package ocitest

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/sysext/sysext/extension"
	"github.com/sysext/sysext/internal/testenv"
)

// Squashfs makes a small squashfs extension image with mksquashfs in a
// temp dir and returns its path, NAME-VERSION-ARCH.raw. The tree holds
// usr/lib/extension-release.d/extension-release.NAME rendered from m and
// usr/share/NAME/payload with payload bytes (pad it to make big images).
// It skips (fails in CI) without mksquashfs.
func Squashfs(t testing.TB, m extension.Metadata, payload []byte) string {
	t.Helper()
	mk := testenv.RequireTool(t, "mksquashfs")
	tmp := t.TempDir()
	root := filepath.Join(tmp, "root")
	rel := filepath.Join(root, extension.ReleasePath(m.Name))
	if err := os.MkdirAll(filepath.Dir(rel), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(rel, m.Release().Format(), 0o644); err != nil {
		t.Fatal(err)
	}
	share := filepath.Join(root, "usr", "share", m.Name)
	if err := os.MkdirAll(share, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(share, "payload"), payload, 0o644); err != nil {
		t.Fatal(err)
	}
	arch := m.Arch
	if arch == "" {
		arch = extension.AnyArch
	}
	out := filepath.Join(tmp, extension.FileName(m.Name, m.Version, arch))
	cmd := exec.Command(mk, root, out, "-all-root", "-noappend", "-no-progress", "-quiet", "-noI", "-noD", "-noF", "-noX", "-mkfs-time", "0", "-all-time", "0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("mksquashfs: %v\n%s", err, b)
	}
	return out
}

// Meta is a convenient valid Metadata: ID=_any, the given name, version
// and architecture.
func Meta(name, version string, arch extension.Arch) extension.Metadata {
	return extension.Metadata{Name: name, Version: version, Arch: arch, ID: extension.AnyID}
}
