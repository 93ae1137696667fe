package main

import (
	"crypto/rand"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sysext/sysext/extension"
	"github.com/sysext/sysext/oci/ocitest"
)

// stagedDeployment makes an ostree stateroot with one staged deployment
// checkout, as `bootc upgrade` leaves it: an empty var/ placeholder (the
// stateroot's var/ is shared), /etc/os-release a link into /usr.
func stagedDeployment(t *testing.T, id, versionID string) (stateroot, staged string) {
	t.Helper()
	stateroot = filepath.Join(t.TempDir(), "ostree/deploy", id)
	staged = filepath.Join(stateroot, "deploy/0123abcd.0")
	writeFile(t, filepath.Join(staged, "usr/lib/os-release"), "ID="+id+"\nVERSION_ID="+versionID+"\n")
	for _, d := range []string{filepath.Join(staged, "var"), filepath.Join(staged, "etc/sysext"), filepath.Join(stateroot, "var")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("../usr/lib/os-release", filepath.Join(staged, "etc/os-release")); err != nil {
		t.Fatal(err)
	}
	return stateroot, staged
}

// TestBootcStagedSync is the documented bootc step of docs/node.md,
// exactly: `sysext sync --root "$staged"` with the declaration and its key
// inside the staged deployment (Policy=key:/etc/sysext/NAME.pub). The key
// exists only in the deployment, so reading the host's /etc (as sync did)
// fails; a Policy= path that climbs or links out resolves inside the root
// and the error names the declaration's file and line, not a flag.
func TestBootcStagedSync(t *testing.T) {
	t.Setenv("DOCKER_CONFIG", t.TempDir())
	t.Setenv("COSIGN_PASSWORD", "pw")
	keys := t.TempDir()
	if _, errs, code := runCLI(t, "generate-key-pair", "--output-key-prefix", filepath.Join(keys, "acme")); code != 0 {
		t.Fatalf("generate-key-pair: %s", errs)
	}
	pub, err := os.ReadFile(filepath.Join(keys, "acme.pub"))
	if err != nil {
		t.Fatal(err)
	}
	m := ocitest.Meta("bootcdocker", "24", extension.HostArch())
	m.ID, m.VersionID = "fedora", "42"
	reg := ocitest.NewOlareg(t)
	img := ocitest.Squashfs(t, m, []byte("docker 24"))
	if _, errs, code := runCLI(t, "push", "-q", "--sign", "--key", filepath.Join(keys, "acme.key"), img, reg.Ref("acme/sysext/bootcdocker:24-fedora-42")); code != 0 {
		t.Fatalf("push --sign: %s", errs)
	}

	stateroot, staged := stagedDeployment(t, "fedora", "42")
	// A key name no host has, so a read of the host's /etc cannot pass.
	b := make([]byte, 6)
	rand.Read(b)
	keyName := "/etc/sysext/acme-" + hex.EncodeToString(b) + ".pub"
	if _, err := os.Stat(keyName); err == nil {
		t.Fatalf("the host has %s", keyName)
	}
	writeFile(t, filepath.Join(staged, keyName), string(pub))
	decl := filepath.Join(staged, "etc/sysext/extensions.d/bootcdocker.conf")
	writeFile(t, decl, "[Extension]\nSource="+reg.Ref("acme/sysext/bootcdocker:24-{ID}-{VERSION_ID}")+"\nPolicy=key:"+keyName+"\n")

	out, errs, code := runCLI(t, "sync", "--root", staged)
	if code != 0 {
		t.Fatalf("sysext sync --root $staged: exit %d\n%s%s", code, out, errs)
	}
	link := filepath.Join(staged, "etc/extensions/bootcdocker.raw")
	target, err := os.Readlink(link)
	if err != nil || !strings.HasPrefix(target, "/var/lib/sysext/store/bootcdocker/") {
		t.Fatalf("link in the staged deployment: %q %v", target, err)
	}
	if _, err := os.Stat(filepath.Join(stateroot, target)); err != nil {
		t.Fatalf("image in the stateroot's shared store: %v", err)
	}
	if ents, _ := os.ReadDir(filepath.Join(staged, "var")); len(ents) != 0 {
		t.Fatalf("wrote into the deployment's own var/: %v", ents)
	}

	// A Policy= path that climbs out of the tree, or goes through an
	// absolute link to the host's key directory, is taken inside the tree.
	hostKeys := t.TempDir()
	writeFile(t, filepath.Join(hostKeys, "acme.pub"), string(pub))
	for _, p := range []string{"/etc/sysext/hostkeys/acme.pub", "/../../../../../../.." + hostKeys + "/acme.pub"} {
		_, staged2 := stagedDeployment(t, "fedora", "42")
		if err := os.Symlink(hostKeys, filepath.Join(staged2, "etc/sysext/hostkeys")); err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(staged2, "etc/sysext/extensions.d/bootcdocker.conf"),
			"# a declaration\n[Extension]\nSource="+reg.Ref("acme/sysext/bootcdocker:24-{ID}-{VERSION_ID}")+"\nPolicy=key:"+p+"\n")
		out, errs, code := runCLI(t, "sync", "--root", staged2)
		errs = out + errs // a failed extension's reason is its result line
		if code == 0 {
			t.Fatalf("Policy=key:%s read a key outside --root", p)
		}
		t.Logf("Policy=key:%s: %s", p, errs)
		if !strings.Contains(errs, "extensions.d/bootcdocker.conf:4") || strings.Contains(errs, "--key") {
			t.Errorf("Policy=key:%s: the error should name the declaration's file and line, not a flag:\n%s", p, errs)
		}
		if _, err := os.Lstat(filepath.Join(staged2, "etc/extensions/bootcdocker.raw")); err == nil {
			t.Errorf("Policy=key:%s: a refused sync linked the extension", p)
		}
	}
}

// TestNothingWrittenWhenNothingDone: read-only commands, and commands that
// fail before doing anything (a bad reference, no trust, nothing
// installed), leave the root as it was: no /var/lib/sysext, no lock file.
func TestNothingWrittenWhenNothingDone(t *testing.T) {
	t.Setenv("DOCKER_CONFIG", t.TempDir())
	layout := ocitest.NewLayout(t, "1.0").String()
	img := ocitest.Squashfs(t, ocitest.Meta("quiet", "1.0", extension.HostArch()), []byte("q"))
	if _, errs, code := runCLI(t, "push", "-q", img, layout); code != 0 {
		t.Fatalf("push: %s", errs)
	}
	for _, args := range [][]string{
		{"list"},
		{"list", "--json"},
		{"pull", "UPPER/Bad:ref"},
		{"pull", layout}, // no trust policy
		{"pull", layout, "--key", "/nonexistent/key.pub"}, // a key that does not load
		{"pull", layout, "--name", "bad/name", "--insecure-allow-unsigned"},
		{"update", "--all"},
		{"update", "nosuch"},
		{"rollback", "nosuch"},
		{"remove", "nosuch"},
		{"gc"},
		{"sync"}, // nothing declared
	} {
		root := nodeTestRoot(t)
		before := treeOf(t, root)
		_, errs, code := runCLI(t, append(args, "--root", root)...)
		after := treeOf(t, root)
		if before != after {
			t.Errorf("sysext %s (exit %d, %s) changed the root:\nbefore:\n%safter:\n%s", strings.Join(args, " "), code, strings.TrimSpace(errs), before, after)
		}
	}
	// A declaration that does not parse, names a bad reference or a key the
	// tree does not have: sync refuses, naming the file and line, before
	// writing.
	for decl, where := range map[string]string{
		"[Extension]\nSource=x\nPolicy=key:relative.pub\n":                         "bad.conf:3",
		"[Extension]\nSource=UPPER/Bad:ref\n":                                      "bad.conf:2",
		"[Extension]\nSource=" + layout + "\nPolicy=key:/etc/sysext/missing.pub\n": "bad.conf:3",
	} {
		root := nodeTestRoot(t)
		writeFile(t, filepath.Join(root, "etc/sysext/extensions.d/bad.conf"), decl)
		before := treeOf(t, root)
		if out, errs, code := runCLI(t, "sync", "--root", root); code == 0 || !strings.Contains(out+errs, where) {
			t.Errorf("sync with %q: exit %d, %s", decl, code, errs)
		}
		if after := treeOf(t, root); after != before {
			t.Errorf("sync with %q changed the root:\n%s", decl, after)
		}
	}
}

// treeOf lists every path under root, one a line.
func treeOf(t *testing.T, root string) string {
	t.Helper()
	var b strings.Builder
	filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err == nil {
			b.WriteString(strings.TrimPrefix(p, root) + "\n")
		}
		return nil
	})
	return b.String()
}

// TestUntrustedTextEscaped: an annotation holding terminal escapes and a
// right-to-left override is shown escaped by inspect, never raw.
func TestUntrustedTextEscaped(t *testing.T) {
	t.Setenv("DOCKER_CONFIG", t.TempDir())
	ref := ocitest.NewLayout(t, "1.0").String()
	img := ocitest.Squashfs(t, ocitest.Meta("esc", "1.0", extension.HostArch()), []byte("e"))
	evil := "https://example.com/\x1b[2J\x1b[31m\u202Eevil\u200B"
	if _, errs, code := runCLI(t, "push", "-q", "--annotation", "org.opencontainers.image.source="+evil, img, ref); code != 0 {
		t.Fatalf("push: %s", errs)
	}
	out, errs, code := runCLI(t, "inspect", ref)
	if code != 0 {
		t.Fatalf("inspect: %d %s", code, errs)
	}
	if strings.ContainsAny(out, "\x1b\u202E\u200B") {
		t.Errorf("inspect printed terminal escapes or invisible characters raw:\n%q", out)
	}
	if !strings.Contains(out, `\x1b[2J\x1b[31m\u202eevil\u200b`) {
		t.Errorf("inspect does not show the annotation escaped:\n%s", out)
	}
}
