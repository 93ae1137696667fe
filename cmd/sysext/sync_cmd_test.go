package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sysext/sysext/extension"
	"github.com/sysext/sysext/oci/ocitest"
)

// TestSyncDryRunChecksWhatSyncChecks: a declaration whose source is
// another extension is refused by sync; sync --dry-run checks everything
// but writing, so it refuses it too instead of saying would-pull, and
// writes nothing. The reason is printed once.
func TestSyncDryRunChecksWhatSyncChecks(t *testing.T) {
	ref := ocitest.NewLayout(t, "1").String()
	img := ocitest.Squashfs(t, ocitest.Meta("hello", "1.0", extension.HostArch()), []byte("x"))
	if _, errs, code := runCLI(t, "push", "-q", img, ref); code != 0 {
		t.Fatalf("push: %s", errs)
	}
	root := t.TempDir()
	writeFile(t, filepath.Join(root, "etc/os-release"), "ID=debian\nVERSION_ID=12\n")
	writeFile(t, filepath.Join(root, "etc/sysext/extensions.d/liar.conf"), "[Extension]\nName=liar\nSource="+ref+"\nInsecureAllowUnsigned=yes\n")
	const reason = `the manifest is for extension "hello", not "liar"`

	out, errs, code := runCLI(t, "sync", "--dry-run", "--root", root)
	if code != exitFailure || strings.Contains(out, "would-pull") || strings.Count(out+errs, reason) != 1 {
		t.Fatalf("sync --dry-run: exit %d, want 1 and the reason once:\n%s%s", code, out, errs)
	}
	if _, err := os.Stat(filepath.Join(root, "var/lib/sysext/store")); err == nil {
		t.Fatal("sync --dry-run wrote the store")
	}
	out, errs, code = runCLI(t, "sync", "--root", root)
	if code != exitFailure || strings.Count(out+errs, reason) != 1 {
		t.Fatalf("sync: exit %d, want 1 and the reason once:\n%s%s", code, out, errs)
	}

	// A good declaration: the dry run says what it would pull, with the
	// version it found, and writes nothing.
	writeFile(t, filepath.Join(root, "etc/sysext/extensions.d/liar.conf"), "")
	writeFile(t, filepath.Join(root, "etc/sysext/extensions.d/hello.conf"), "[Extension]\nName=hello\nSource="+ref+"\nInsecureAllowUnsigned=yes\n")
	out, errs, code = runCLI(t, "sync", "--dry-run", "--root", root)
	if code != 0 || !strings.Contains(out, "hello 1.0: would-pull") {
		t.Fatalf("sync --dry-run: exit %d\n%s%s", code, out, errs)
	}
	if ents, _ := os.ReadDir(filepath.Join(root, "var/lib/sysext/store")); len(ents) != 0 {
		t.Fatalf("sync --dry-run stored %v", ents)
	}
	if out, errs, code = runCLI(t, "sync", "--root", root); code != 0 || !strings.Contains(out, "hello 1.0: pulled") {
		t.Fatalf("sync: exit %d\n%s%s", code, out, errs)
	}
}
