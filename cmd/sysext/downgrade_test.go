package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/sysext/sysext/extension"
	"github.com/sysext/sysext/oci"
	"github.com/sysext/sysext/oci/ocitest"
	"github.com/sysext/sysext/verify"
)

// TestDowngradeRefused: the tag a node follows moves back from 2.0 to an
// older build (1.10 < 2.0 in systemd's order, though "1.10" > "1.9" and
// "1.10" < "1.9" as strings would mislead). update, sync and a pull of the
// old tag refuse to go down; --allow-downgrade and rollback do it.
func TestDowngradeRefused(t *testing.T) {
	t.Setenv("DOCKER_CONFIG", t.TempDir())
	arch := extension.HostArch()
	v2 := ocitest.Squashfs(t, ocitest.Meta("down", "2.0", arch), []byte("two"))
	v1 := ocitest.Squashfs(t, ocitest.Meta("down", "1.10", arch), []byte("one"))
	layout := ocitest.NewLayout(t, "stable").String()
	old := strings.TrimSuffix(layout, ":stable") + ":old"
	for _, p := range [][2]string{{v1, old}, {v2, layout}} {
		if _, errs, code := runCLI(t, "push", "-q", p[0], p[1]); code != 0 {
			t.Fatalf("push: %s", errs)
		}
	}
	root := nodeTestRoot(t)
	link := filepath.Join(root, "var/lib/extensions/down.raw")
	active := func() string {
		target, err := os.Readlink(link)
		if err != nil {
			t.Fatal(err)
		}
		return filepath.Base(target)
	}
	if _, errs, code := runCLI(t, "pull", layout, "--root", root, "--insecure-allow-unsigned"); code != 0 {
		t.Fatalf("pull 2.0: %s", errs)
	}
	// The tag moves back to the 1.10 build.
	if _, errs, code := runCLI(t, "push", "-q", v1, layout); code != 0 {
		t.Fatalf("push: %s", errs)
	}
	for _, args := range [][]string{
		{"update", "--all"},
		{"pull", old, "--insecure-allow-unsigned"},
	} {
		out, errs, code := runCLI(t, append(args, "--root", root)...)
		if code != exitFailure || !strings.Contains(out+errs, "older than the active 2.0") {
			t.Errorf("%s after the tag moved back: exit %d\n%s%s", strings.Join(args, " "), code, out, errs)
		}
		if a := active(); a != "down-2.0-"+string(arch)+".raw" {
			t.Fatalf("%s moved the node to %s", strings.Join(args, " "), a)
		}
	}
	if out, errs, code := runCLI(t, "update", "--all", "--allow-downgrade", "--root", root); code != 0 || !strings.Contains(out, "1.10") {
		t.Fatalf("update --allow-downgrade: %d %s%s", code, out, errs)
	}
	if out, errs, code := runCLI(t, "rollback", "down", "--root", root); code != 0 || !strings.Contains(out, "2.0") {
		t.Fatalf("rollback to 2.0: %d %s%s", code, out, errs)
	}
}

// TestReplayedSignatureRefused: a node whose policy asks for fresh
// signatures ("freshness": requireTag, maxAge) refuses an old signed build
// when the tag is moved back to it, even with --allow-downgrade, and a
// build signed for another tag served under its tag. `sysext sign` and
// `push --sign` write the tag and time the policy reads.
func TestReplayedSignatureRefused(t *testing.T) {
	t.Setenv("DOCKER_CONFIG", t.TempDir())
	t.Setenv("COSIGN_PASSWORD", "pw")
	ctx := context.Background()
	arch := extension.HostArch()
	keys := t.TempDir()
	if _, errs, code := runCLI(t, "generate-key-pair", "--output-key-prefix", filepath.Join(keys, "acme")); code != 0 {
		t.Fatalf("generate-key-pair: %s", errs)
	}
	b, err := os.ReadFile(filepath.Join(keys, "acme.key"))
	if err != nil {
		t.Fatal(err)
	}
	signer, err := verify.LoadPrivateKey(b, []byte("pw"))
	if err != nil {
		t.Fatal(err)
	}
	layout := ocitest.NewLayout(t, "stable")
	// target opens the layout afresh: the CLI runs in between change it.
	target := func() oci.Target {
		t.Helper()
		tg, err := oci.Open(ctx, layout, oci.Options{})
		if err != nil {
			t.Fatal(err)
		}
		return tg
	}
	// publish pushes a build under tag and signs it as of when, for signedTag.
	publish := func(version, tag, signedTag string, when time.Time) ocispec.Descriptor {
		t.Helper()
		img := ocitest.Squashfs(t, ocitest.Meta("fresh", version, arch), []byte(version))
		r := strings.TrimSuffix(layout.String(), ":stable") + ":" + tag
		if _, errs, code := runCLI(t, "push", "-q", img, r); code != 0 {
			t.Fatalf("push: %s", errs)
		}
		tg := target()
		desc, err := tg.Resolve(ctx, tag)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := verify.SignTree(ctx, tg, desc, layout.Scope(), signer.WithFreshness(signedTag, when)); err != nil {
			t.Fatal(err)
		}
		return desc
	}
	old := publish("1.0", "stable", "stable", time.Now().Add(-40*24*time.Hour))
	// The current build, signed by the CLI: its payloads name tag and time.
	img := ocitest.Squashfs(t, ocitest.Meta("fresh", "2.0", arch), []byte("2.0"))
	if _, errs, code := runCLI(t, "push", "-q", "--sign", "--key", filepath.Join(keys, "acme.key"), img, layout.String()); code != 0 {
		t.Fatalf("push --sign: %s", errs)
	}
	beta := publish("3.0", "beta", "beta", time.Now())

	root := nodeTestRoot(t)
	pub, _ := os.ReadFile(filepath.Join(keys, "acme.pub"))
	writeFile(t, filepath.Join(root, "etc/sysext/acme.pub"), string(pub))
	writeFile(t, filepath.Join(root, "etc/sysext/policy.json"), `{"default": [{"type": "sigstoreSigned", "keyPath": "/etc/sysext/acme.pub",
  "freshness": {"requireTag": true, "maxAge": "30d"}}]}`)
	if out, errs, code := runCLI(t, "pull", layout.String(), "--root", root); code != 0 || !strings.Contains(out, "2.0") {
		t.Fatalf("pull of the fresh 2.0: %d %s%s", code, out, errs)
	}
	for _, c := range []struct {
		desc ocispec.Descriptor
		why  string
	}{
		{old, "freshness.maxAge"},                   // the tag moved back to an old signed build
		{beta, `made for tag "beta", not "stable"`}, // a build signed for another tag
	} {
		if err := target().Tag(ctx, c.desc, "stable"); err != nil {
			t.Fatal(err)
		}
		out, errs, code := runCLI(t, "update", "--all", "--allow-downgrade", "--root", root)
		t.Logf("update --all --allow-downgrade: exit %d: %s%s", code, out, errs)
		if code != exitFailure || !strings.Contains(out+errs, c.why) {
			t.Errorf("update after the tag moved: exit %d, want a refusal saying %q:\n%s%s", code, c.why, out, errs)
		}
		if out, _, _ := runCLI(t, "list", "--root", root); !strings.Contains(out, "2.0") {
			t.Errorf("the node left 2.0:\n%s", out)
		}
	}
}
