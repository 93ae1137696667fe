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
		_, errs, code := runCLI(t, "sync", "--root", staged2)
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
