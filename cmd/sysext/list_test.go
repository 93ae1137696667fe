package main

import (
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/sysext/sysext/extension"
	"github.com/sysext/sysext/oci"
	"github.com/sysext/sysext/oci/ocitest"
)

// TestListFitsAndExplainsUnproven: right after a signed pull into a node
// root (the node demo's step), list fits 100 columns, says what unproven
// means and what proves it; --wide prints the source and signer whole.
func TestListFitsAndExplainsUnproven(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	t.Setenv("COSIGN_PASSWORD", "")
	if _, errs, code := runCLI(t, "generate-key-pair"); code != 0 {
		t.Fatal(errs)
	}
	// A long layout path, as mktemp makes in the demo.
	layout := filepath.Join(dir, "sysext-node-demo.Xq3fLw9", "registry")
	ref := oci.Reference{Layout: layout, Tag: "stable"}.String()
	img := ocitest.Squashfs(t, ocitest.Meta("node-hello", "1.0", extension.HostArch()), []byte("x"))
	if _, errs, code := runCLI(t, "push", img, ref, "-q", "--sign", "--key", "cosign.key"); code != 0 {
		t.Fatal(errs)
	}
	root := filepath.Join(dir, "node")
	writeFile(t, filepath.Join(root, "etc/os-release"), "ID=debian\nVERSION_ID=12\n")
	if _, errs, code := runCLI(t, "pull", ref, "--root", root, "--key", "cosign.pub", "-q"); code != 0 {
		t.Fatal(errs)
	}
	out, errs, code := runCLI(t, "list", "--root", root)
	if code != 0 {
		t.Fatalf("list: %d %s", code, errs)
	}
	for _, l := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
		if n := utf8.RuneCountInString(l); n > listWidth {
			t.Errorf("a line of %d columns:\n%s", n, out)
		}
	}
	if !strings.Contains(out, "unproven") || !strings.Contains(out, "the next 'sysext sync' on the running") {
		t.Errorf("list does not say what unproven means:\n%s", out)
	}
	wide, _, code := runCLI(t, "list", "--root", root, "--wide")
	if code != 0 || !strings.Contains(wide, ref) || !regexp.MustCompile(`key:sha256:[0-9a-f]{64}`).MatchString(wide) || !regexp.MustCompile(`sha256:[0-9a-f]{64}`).MatchString(wide) || strings.Contains(wide, "…") {
		t.Errorf("list --wide:\n%s", wide)
	}
	if strings.Contains(out, ref) || !strings.Contains(out, "…") {
		t.Errorf("the default list did not shorten the source:\n%s", out)
	}
	// The key id and the source both stay readable: the shortening is
	// shared, not all taken from one column.
	if !regexp.MustCompile(`key:[0-9a-f]{12} `).MatchString(out) || !strings.Contains(out, ref[:9]) || !strings.Contains(out, "stable") {
		t.Errorf("the default list shortened too much:\n%s", out)
	}
}

func TestEllipsize(t *testing.T) {
	for _, c := range []struct {
		in   string
		n    int
		want string
	}{
		{"short", 12, "short"},
		{"oci:/tmp/sysext-node-demo.Xq3fLw9/registry:stable", 20, "oci:/tmp/…try:stable"},
	} {
		if got := ellipsize(c.in, c.n); got != c.want || utf8.RuneCountInString(got) > c.n {
			t.Errorf("ellipsize(%q, %d) = %q, want %q", c.in, c.n, got, c.want)
		}
	}
}
