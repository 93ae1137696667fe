package node

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sysext/sysext/extension"
	"github.com/sysext/sysext/internal/testenv"
	"github.com/sysext/sysext/oci/ocitest"
	"github.com/sysext/sysext/store"
	"github.com/sysext/sysext/verify"
)

const cosignPassword = "node-e2e"

// cosignRun runs the real cosign offline with its caches in home.
func cosignRun(t *testing.T, home string, args ...string) string {
	t.Helper()
	bin := testenv.RequireTool(t, "cosign")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(os.Environ(), "HOME="+home, "TUF_ROOT="+filepath.Join(home, "tuf"), "COSIGN_PASSWORD="+cosignPassword, "COSIGN_YES=true")
	cmd.Dir = home
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("cosign %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// mergeAndRun merges the node root's extensions with the host's
// systemd-sysext in a private namespace (ROOT/var bound over /var, so links
// into /var/lib/sysext/store resolve) and runs script there.
func mergeAndRun(t *testing.T, root, script string) string {
	t.Helper()
	out, err := testenv.RunInNamespace(t, "mount --bind "+testenv.ShellQuote(filepath.Join(root, "var"))+" /var\nsystemd-sysext merge\n"+script)
	if err != nil {
		t.Fatalf("merge: %v\n%s", err, out)
	}
	return out
}

// TestEndToEnd runs the node's whole loop against the distribution registry
// with images signed by the real cosign, and merges the result with the
// host's systemd-sysext after each step.
func TestEndToEnd(t *testing.T) {
	testenv.RequireRoot(t)
	reg := ocitest.StartDistribution(t)
	home := t.TempDir()
	cosignRun(t, home, "generate-key-pair", "--output-key-prefix", "signer")
	key, pub := filepath.Join(home, "signer.key"), filepath.Join(home, "signer.pub")
	_, otherPub, err := verify.GenerateKeyPair([]byte("x"))
	must(t, err)
	otherKey := filepath.Join(home, "other.pub")
	must(t, os.WriteFile(otherKey, otherPub, 0o644))

	ref := reg.Ref("sysext/e2ehello:stable")
	sign := func(t *testing.T, tag string, file string) {
		res := push(t, reg.Ref("sysext/e2ehello:"+tag), file)
		for _, m := range res.Manifests {
			cosignRun(t, home, "sign", "--key", key, "--tlog-upload=false", "--allow-http-registry", "--allow-insecure-registry", reg.Ref("sysext/e2ehello@"+m.Descriptor.Digest.String()))
		}
	}
	v1 := makeImage(t, meta("e2ehello", "1.0"), 0)
	v2 := makeImage(t, meta("e2ehello", "2.0"), 0)
	sign(t, "stable", v1)
	push(t, reg.Ref("sysext/e2ehello:unsigned"), makeImage(t, meta("e2ehello", "9.0"), 0))

	root := nodeRoot(t, debianRelease)
	mk := func(keys ...string) *Node {
		return New(Options{Store: storeOpts(root), OCI: ocitest.TestOptions(), Verifier: PolicyVerifier{Trust: verify.TrustOptions{KeyPaths: keys, Root: root}}})
	}
	n := mk(pub)
	ctx := context.Background()

	// Unsigned and wrong signer are refused; nothing is installed.
	if _, err := n.Pull(ctx, PullRequest{Ref: reg.Ref("sysext/e2ehello:unsigned"), Trust: store.Trust{KeyPaths: []string{pub}}}); err == nil {
		t.Fatal("pulled an unsigned image with a key policy")
	} else {
		t.Logf("unsigned: %v", err)
	}
	if _, err := mk(otherKey).Pull(ctx, PullRequest{Ref: ref, Trust: store.Trust{KeyPaths: []string{otherKey}}}); err == nil {
		t.Fatal("pulled an image signed by another key")
	} else {
		t.Logf("wrong signer: %v", err)
	}
	if _, err := os.Lstat(filepath.Join(root, "var/lib/extensions/e2ehello.raw")); err == nil {
		t.Fatal("a refused pull left a link")
	}

	r, err := n.Pull(ctx, PullRequest{Ref: ref, Trust: store.Trust{KeyPaths: []string{pub}}})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(r.Signer, "key:") || r.Unsigned {
		t.Fatalf("signer %q", r.Signer)
	}
	if out := mergeAndRun(t, root, "e2ehello-hello"); !strings.Contains(out, "e2ehello 1.0") {
		t.Fatalf("merged 1.0 does not run:\n%s", out)
	}
	// The tag moves to a signed 2.0: update pulls it.
	sign(t, "stable", v2)
	res, err := n.Update(ctx, UpdateOptions{All: true})
	if err != nil || res[0].Action != "updated" {
		t.Fatalf("update: %+v %v", res, err)
	}
	if out := mergeAndRun(t, root, "e2ehello-hello"); !strings.Contains(out, "e2ehello 2.0") {
		t.Fatalf("merged 2.0 does not run:\n%s", out)
	}
	if _, err := n.Rollback(ctx, "e2ehello"); err != nil {
		t.Fatal(err)
	}
	if out := mergeAndRun(t, root, "e2ehello-hello"); !strings.Contains(out, "e2ehello 1.0") {
		t.Fatalf("after rollback 1.0 does not run:\n%s", out)
	}
	if removed, err := n.GC(ctx, 1); err != nil || len(removed) != 1 {
		t.Fatalf("gc: %v %v", removed, err)
	}

	// The refresh and check seams with the real systemd-sysext: the checker
	// merges the root in a private namespace and runs the program.
	o := n.opts
	o.RefreshWithRoot = true
	o.Refresher = CommandRefresher{} // nothing to refresh outside the namespace
	o.Checker = checkFunc(func(a Activation) error {
		out := mergeAndRun(t, root, a.Name+"-hello")
		if !strings.Contains(out, a.Name+" "+a.Install.Version) {
			return errors.New("merged tree does not run " + a.Install.Version + ": " + out)
		}
		return nil
	})
	res, err = New(o).Update(ctx, UpdateOptions{All: true})
	if err != nil || res[0].Version != "2.0" || res[0].Activation != "proven" {
		t.Fatalf("update with a real merge check: %+v %v", res, err)
	}

	// check: a new OS version whose builds are missing.
	osr, _ := extension.ParseRelease([]byte(debianRelease))
	if rs, err := n.Check(ctx, osr, "debian 12"); err != nil || !rs[0].OK {
		t.Fatalf("check: %+v %v", rs, err)
	}

	// sync: declare another extension, drop nothing pulled by hand.
	m := meta("e2esync", "12")
	m.ID, m.VersionID = "debian", "12"
	sign2 := push(t, reg.Ref("sysext/e2esync:debian-12"), makeImage(t, m, 0))
	for _, pm := range sign2.Manifests {
		cosignRun(t, home, "sign", "--key", key, "--tlog-upload=false", "--allow-http-registry", "--allow-insecure-registry", reg.Ref("sysext/e2esync@"+pm.Descriptor.Digest.String()))
	}
	decl := filepath.Join(root, "usr/lib/sysext/extensions.d/e2esync.conf")
	must(t, os.MkdirAll(filepath.Dir(decl), 0o755))
	// The declaration names its key as the node sees it: inside the root.
	pubBytes, err := os.ReadFile(pub)
	must(t, err)
	must(t, os.MkdirAll(filepath.Join(root, "etc/sysext"), 0o755))
	must(t, os.WriteFile(filepath.Join(root, "etc/sysext/e2e.pub"), pubBytes, 0o644))
	must(t, os.WriteFile(decl, []byte("[Extension]\nSource="+reg.Ref("sysext/e2esync:{ID}-{VERSION_ID}")+"\nPolicy=key:/etc/sysext/e2e.pub\n"), 0o644))
	rs, err := n.Sync(ctx, SyncOptions{})
	if err != nil {
		t.Fatalf("sync: %+v %v", rs, err)
	}
	if out := mergeAndRun(t, root, "e2esync-hello; e2ehello-hello"); !strings.Contains(out, "e2esync 12") || !strings.Contains(out, "e2ehello 2.0") {
		t.Fatalf("after sync:\n%s", out)
	}
	// check against Debian 13: e2esync has no build for it.
	osr13, _ := extension.ParseRelease([]byte("ID=debian\nVERSION_ID=13\n"))
	rs2, err := n.Check(ctx, osr13, "debian 13")
	if err == nil {
		t.Fatalf("check for debian 13 passed: %+v", rs2)
	}
	for _, r := range rs2 {
		if r.Name == "e2esync" && (r.OK || !strings.Contains(r.Reason, "not found")) {
			t.Fatalf("check e2esync for 13: %+v", r)
		}
	}
	// The declaration goes away: sync removes what it installed, keeps
	// what was pulled by hand.
	must(t, os.MkdirAll(filepath.Join(root, "etc/sysext/extensions.d"), 0o755))
	must(t, os.WriteFile(filepath.Join(root, "etc/sysext/extensions.d/e2esync.conf"), nil, 0o644))
	if rs, err := n.Sync(ctx, SyncOptions{}); err != nil || len(rs) != 1 || rs[0].Action != "removed" {
		// the empty /etc file masks the /usr/lib one
		t.Fatalf("sync after masking: %+v %v", rs, err)
	}
	l, _ := n.List(ctx)
	if len(l.Extensions) != 1 || l.Extensions[0].Name != "e2ehello" {
		t.Fatalf("list after sync: %+v", l)
	}
}
