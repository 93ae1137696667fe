package node

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sysext/sysext/internal/testenv"
	"github.com/sysext/sysext/oci/ocitest"
	"github.com/sysext/sysext/store"
)

// TestStagedDeployment prepares an ostree/bootc staged deployment the way
// docs/node.md says (`sysext sync --root DEPLOYMENT`): the links go into the
// deployment's /etc/extensions, the images into the stateroot's shared
// /var, and the old deployment keeps its own version. Then the host's
// systemd-sysext merges each deployment's set.
func TestStagedDeployment(t *testing.T) {
	reg := ocitest.NewOlareg(t)
	push(t, reg.Ref("ext/dep:debian-12"), makeImage(t, meta("dep", "12"), 0))
	push(t, reg.Ref("ext/dep:debian-13"), makeImage(t, meta("dep", "13"), 0))
	stateroot := filepath.Join(t.TempDir(), "ostree/deploy/debian")
	old, staged := filepath.Join(stateroot, "deploy/aaa.0"), filepath.Join(stateroot, "deploy/bbb.0")
	for i, d := range []string{old, staged} {
		must(t, os.MkdirAll(filepath.Join(d, "etc/sysext/extensions.d"), 0o755))
		must(t, os.MkdirAll(filepath.Join(d, "var"), 0o755)) // ostree's empty placeholder
		must(t, os.WriteFile(filepath.Join(d, "etc/os-release"), []byte("ID=debian\nVERSION_ID="+[]string{"12", "13"}[i]+"\n"), 0o644))
		must(t, os.WriteFile(filepath.Join(d, "etc/sysext/extensions.d/dep.conf"), []byte("[Extension]\nSource="+reg.Ref("ext/dep:{ID}-{VERSION_ID}")+"\n"), 0o644))
	}
	ctx := context.Background()
	for _, d := range []string{old, staged} {
		n := New(Options{Store: store.Options{Root: d, PerDeployment: true}, OCI: ocitest.TestOptions(), Verifier: unsigned{}})
		if rs, err := n.Sync(ctx, SyncOptions{}); err != nil || len(rs) != 1 || rs[0].Action != "pulled" {
			t.Fatalf("sync --root %s: %+v %v", d, rs, err)
		}
	}
	if ents := storedFiles(t, filepath.Join(stateroot, "var/lib/sysext/store/dep")); len(ents) != 2 {
		t.Fatalf("shared store holds %d images, want 2", len(ents))
	}
	if ents, _ := os.ReadDir(filepath.Join(staged, "var")); len(ents) != 0 {
		t.Fatal("wrote into the deployment's own var/")
	}
	// gc in the staged deployment keeps the old deployment's image.
	n := New(Options{Store: store.Options{Root: staged, PerDeployment: true}, OCI: ocitest.TestOptions(), Verifier: unsigned{}})
	if removed, err := n.GC(ctx, 1); err != nil || len(removed) != 0 {
		t.Fatalf("gc removed %v %v", removed, err)
	}
	if os.Geteuid() != 0 && !testenv.InCI() {
		return
	}
	for d, want := range map[string]string{old: "dep 12", staged: "dep 13"} {
		out, err := testenv.RunInNamespace(t, "mount --bind "+testenv.ShellQuote(filepath.Join(stateroot, "var"))+" /var\n"+
			// The deployment's links, seen where systemd-sysext looks; /run is
			// the namespace's own tmpfs, so nothing on the host changes.
			"mount --bind "+testenv.ShellQuote(filepath.Join(d, "etc/extensions"))+" /run/extensions\n"+
			"systemd-sysext merge\ndep-hello")
		if err != nil || !strings.Contains(out, want) {
			t.Fatalf("merge of %s: %v\n%s", d, err, out)
		}
	}
}
