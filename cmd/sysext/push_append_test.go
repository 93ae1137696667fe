package main

import (
	"context"
	"strings"
	"testing"

	"github.com/sysext/sysext/extension"
	"github.com/sysext/sysext/oci/ocitest"
)

// TestPushAppendKeepsTheSigner, on the distribution registry: push
// --append onto a signed index refuses unless the new index is signed by
// the same key or --allow-unsigned says to drop it, and a refused push
// leaves the tag (and so what nodes verify) as it was.
func TestPushAppendKeepsTheSigner(t *testing.T) {
	reg := ocitest.StartDistribution(t)
	dir := t.TempDir()
	t.Chdir(dir)
	t.Setenv("DOCKER_CONFIG", t.TempDir())
	t.Setenv("COSIGN_PASSWORD", "")
	for _, prefix := range []string{"cosign", "other"} {
		if _, errs, code := runCLI(t, "generate-key-pair", "--output-key-prefix", prefix); code != 0 {
			t.Fatalf("generate-key-pair: %s", errs)
		}
	}
	img := map[string]string{}
	for _, a := range []string{"x86-64", "arm64", "riscv64", "ppc64-le"} {
		img[a] = ocitest.Squashfs(t, ocitest.Meta("hello", "1.0", extension.Arch(a)), []byte(a))
	}
	ref := reg.Ref("ext/hello:1.0")
	tagged := func() string {
		t.Helper()
		tg, r := reg.Open(t, "ext/hello:1.0")
		d, err := tg.Resolve(context.Background(), r.Reference())
		if err != nil {
			t.Fatal(err)
		}
		return d.Digest.String()
	}
	verified := func() bool {
		_, _, code := runCLI(t, "verify", ref, "--key", "cosign.pub")
		return code == 0
	}

	if _, errs, code := runCLI(t, "push", img["x86-64"], ref, "--sign", "--key", "cosign.key", "-q"); code != 0 {
		t.Fatalf("push --sign: %s", errs)
	}
	if !verified() {
		t.Fatal("the signed push does not verify")
	}
	before := tagged()

	// No --sign: refused, the tag untouched, still verified.
	_, errs, code := runCLI(t, "push", "--append", img["arm64"], ref)
	if code != exitFailure || !strings.Contains(errs, "is signed") || !strings.Contains(errs, "--sign --key") || !strings.Contains(errs, "--allow-unsigned") {
		t.Fatalf("push --append onto a signed index without --sign: exit %d\n%s", code, errs)
	}
	if tagged() != before || !verified() {
		t.Fatal("the refused push moved the tag or lost the signature")
	}
	// Another key: refused too.
	if _, errs, code := runCLI(t, "push", "--append", img["arm64"], ref, "--sign", "--key", "other.key"); code != exitFailure || !strings.Contains(errs, "not by --key other.key") {
		t.Fatalf("push --append signed by another key: exit %d\n%s", code, errs)
	}
	if tagged() != before {
		t.Fatal("the refused push moved the tag")
	}
	// The same key: appended and still verified.
	if out, errs, code := runCLI(t, "push", "--append", img["arm64"], ref, "--sign", "--key", "cosign.key"); code != 0 || !strings.Contains(out, "kept") {
		t.Fatalf("push --append --sign with the same key: exit %d\n%s%s", code, out, errs)
	}
	if !verified() {
		t.Fatal("the appended index signed with the same key does not verify")
	}
	// --allow-unsigned means it: the index is replaced unsigned.
	if _, errs, code := runCLI(t, "push", "--append", img["riscv64"], ref, "--allow-unsigned"); code != 0 {
		t.Fatalf("push --append --allow-unsigned: %s", errs)
	}
	if verified() {
		t.Fatal("an unsigned replacement verifies")
	}
	// Its manifests are still signed: appending unsigned is refused again.
	if _, errs, code := runCLI(t, "push", "--append", img["ppc64-le"], ref); code != exitFailure || !strings.Contains(errs, "a manifest of the index") {
		t.Fatalf("push --append onto signed manifests: exit %d %s", code, errs)
	}
	// An unsigned artifact takes --append without more ado, as before.
	plain := reg.Ref("ext/hello:plain")
	if _, errs, code := runCLI(t, "push", img["x86-64"], plain, "-q"); code != 0 {
		t.Fatalf("push: %s", errs)
	}
	if _, errs, code := runCLI(t, "push", "--append", img["ppc64-le"], plain); code != 0 {
		t.Fatalf("push --append onto an unsigned index: %s", errs)
	}
	if _, errs, code := runCLI(t, "push", img["ppc64-le"], ref, "--allow-unsigned"); code != exitUsage || !strings.Contains(errs, "only used with --append") {
		t.Fatalf("--allow-unsigned without --append: exit %d %s", code, errs)
	}
}
