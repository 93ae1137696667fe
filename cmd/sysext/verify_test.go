package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sysext/sysext/oci/ocitest"
	"github.com/sysext/sysext/verify/verifytest"
)

// TestSignVerifyCommands runs generate-key-pair, push, sign and verify in
// process against olareg.
func TestSignVerifyCommands(t *testing.T) {
	t.Setenv("DOCKER_CONFIG", t.TempDir())
	t.Setenv("COSIGN_PASSWORD", "pw")
	dir := t.TempDir()
	prefix := filepath.Join(dir, "release")
	if _, errs, code := runCLI(t, "generate-key-pair", "--output-key-prefix", prefix); code != 0 {
		t.Fatalf("generate-key-pair: %d %s", code, errs)
	}
	if fi, err := os.Stat(prefix + ".key"); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("private key file: %v %v", fi, err)
	}
	// Never overwrites.
	if _, errs, code := runCLI(t, "generate-key-pair", "--output-key-prefix", prefix); code != 1 || !strings.Contains(errs, "already exists") {
		t.Fatalf("overwrite: %d %s", code, errs)
	}
	other := filepath.Join(dir, "other")
	if _, errs, code := runCLI(t, "generate-key-pair", "--output-key-prefix", other); code != 0 {
		t.Fatal(errs)
	}

	reg := ocitest.NewOlareg(t)
	amd := ocitest.Squashfs(t, ocitest.Meta("hello", "1.0", "x86-64"), []byte("amd"))
	arm := ocitest.Squashfs(t, ocitest.Meta("hello", "1.0", "arm64"), []byte("arm"))
	ref := reg.Ref("ext/hello:1.0")
	if _, errs, code := runCLI(t, "push", "-q", amd, arm, ref); code != 0 {
		t.Fatalf("push: %s", errs)
	}

	// Unsigned: refused, exit 1, and the sentence says so.
	_, errs, code := runCLI(t, "verify", "--key", prefix+".pub", ref)
	if code != 1 || !strings.Contains(errs, "is not signed") {
		t.Fatalf("verify unsigned: %d %s", code, errs)
	}
	// No key and no policy (a root without one): refused, naming the ways out.
	_, errs, code = runCLI(t, "verify", "--root", dir, ref)
	if code != 1 || !strings.Contains(errs, "--key") || !strings.Contains(errs, "policy.json") {
		t.Fatalf("verify without trust: %d %s", code, errs)
	}

	// Wrong password.
	t.Setenv("COSIGN_PASSWORD", "nope")
	if _, errs, code := runCLI(t, "sign", "--key", prefix+".key", ref); code != 1 || !strings.Contains(errs, "wrong password") {
		t.Fatalf("sign with wrong password: %d %s", code, errs)
	}
	t.Setenv("COSIGN_PASSWORD", "pw")
	out, errs, code := runCLI(t, "sign", "--key", prefix+".key", ref)
	if code != 0 || strings.Count(out, "signed sha256:") != 3 {
		t.Fatalf("sign: %d %s %s", code, out, errs)
	}

	out, errs, code = runCLI(t, "verify", "--key", prefix+".pub", ref)
	if code != 0 || strings.Count(out, "signed by key:sha256:") != 3 || !strings.Contains(out, "verified") {
		t.Fatalf("verify: %d %s %s", code, out, errs)
	}
	out, errs, code = runCLI(t, "verify", "--json", "--key", prefix+".pub", ref)
	var rep verifyReport
	if code != 0 || json.Unmarshal([]byte(out), &rep) != nil || !rep.Verified || len(rep.Manifests) != 2 || !rep.Manifests[0].Verified || rep.Manifests[0].Platform == "" {
		t.Fatalf("verify --json: %d %s %s", code, out, errs)
	}
	// Another key: refused.
	_, errs, code = runCLI(t, "verify", "--key", other+".pub", ref)
	if code != 1 || !strings.Contains(errs, "no valid signature") {
		t.Fatalf("verify with another key: %d %s", code, errs)
	}
	// A policy file: the scope of this repository trusts the key.
	pol := filepath.Join(dir, "policy.json")
	os.WriteFile(pol, []byte(`{"default": [{"type": "reject"}], "transports": {"docker": {"`+reg.Host+`/ext": [{"type": "sigstoreSigned", "keyPath": "release.pub"}]}}}`), 0o644)
	if out, errs, code := runCLI(t, "verify", "--policy", pol, ref); code != 0 {
		t.Fatalf("verify --policy: %d %s %s", code, out, errs)
	}
	if _, errs, code := runCLI(t, "push", "-q", amd, reg.Ref("elsewhere/hello:1.0")); code != 0 {
		t.Fatal(errs)
	}
	if _, errs, code := runCLI(t, "verify", "--policy", pol, reg.Ref("elsewhere/hello:1.0")); code != 1 || !strings.Contains(errs, "rejects") {
		t.Fatalf("verify --policy outside the scope: %d %s", code, errs)
	}
}

func TestGenerateKeyPairNeedsPassword(t *testing.T) {
	t.Setenv("COSIGN_PASSWORD", "")
	os.Unsetenv("COSIGN_PASSWORD") // t.Setenv restores it afterwards
	prefix := filepath.Join(t.TempDir(), "k")
	_, errs, code := runCLI(t, "generate-key-pair", "--output-key-prefix", prefix)
	if code != 1 || !strings.Contains(errs, "COSIGN_PASSWORD") {
		t.Fatalf("no password source: %d %s", code, errs)
	}
	if _, err := os.Stat(prefix + ".key"); err == nil {
		t.Fatal("key written without a password")
	}
	if _, errs, code := runCLI(t, "sign", "REF.example/x:1"); code != 2 || !strings.Contains(errs, "--key") {
		t.Fatalf("sign without --key: %d %s", code, errs)
	}
}

// TestVerifyKeylessCommand: keyless bundles from a virtual Sigstore on every
// per-architecture manifest, checked offline with --trusted-root.
func TestVerifyKeylessCommand(t *testing.T) {
	t.Setenv("DOCKER_CONFIG", t.TempDir())
	ss := verifytest.New(t)
	reg := ocitest.NewOlareg(t)
	amd := ocitest.Squashfs(t, ocitest.Meta("hello", "1.0", "x86-64"), []byte("amd"))
	ref := reg.Ref("ext/hello:1.0")
	if _, errs, code := runCLI(t, "push", "-q", amd, ref); code != 0 {
		t.Fatalf("push: %s", errs)
	}
	tg, r := reg.Open(t, "ext/hello:1.0")
	desc, err := tg.Resolve(context.Background(), r.Reference())
	if err != nil {
		t.Fatal(err)
	}
	ss.Attach(t, tg, desc, "ci@example.com", "https://issuer.example")
	keyless := []string{"verify", ref, "--trusted-root", ss.TrustedRoot, "--certificate-oidc-issuer", "https://issuer.example"}
	out, errs, code := runCLI(t, append(keyless, "--certificate-identity", "ci@example.com")...)
	if code != 0 || !strings.Contains(out, "signed by ci@example.com from https://issuer.example") || !strings.Contains(out, "transparency log entry verified") {
		t.Fatalf("keyless verify: %d %s %s", code, out, errs)
	}
	if _, errs, code := runCLI(t, append(keyless, "--certificate-identity-regexp", "^ci@")...); code != 0 {
		t.Fatalf("keyless verify with a regexp: %d %s", code, errs)
	}
	if _, errs, code := runCLI(t, append(keyless, "--certificate-identity", "mallory@example.com")...); code != 1 || !strings.Contains(errs, "mallory@example.com") {
		t.Fatalf("keyless verify, other identity: %d %s", code, errs)
	}
	if _, errs, code := runCLI(t, "verify", ref, "--certificate-identity", "ci@example.com", "--certificate-oidc-issuer", "https://issuer.example"); code != exitUsage || !strings.Contains(errs, "--trusted-root") {
		t.Fatalf("keyless verify without a trusted root: %d %s", code, errs)
	}
}

// TestPushSignFetchVerify: push --sign signs what it pushed; fetch checks
// the signature by default before downloading.
func TestPushSignFetchVerify(t *testing.T) {
	t.Setenv("DOCKER_CONFIG", t.TempDir())
	t.Setenv("COSIGN_PASSWORD", "pw")
	dir := t.TempDir()
	key := filepath.Join(dir, "cosign")
	if _, errs, code := runCLI(t, "generate-key-pair", "--output-key-prefix", key); code != 0 {
		t.Fatal(errs)
	}
	other := filepath.Join(dir, "other")
	if _, errs, code := runCLI(t, "generate-key-pair", "--output-key-prefix", other); code != 0 {
		t.Fatal(errs)
	}
	reg := ocitest.NewOlareg(t)
	amd := ocitest.Squashfs(t, ocitest.Meta("hello", "1.0", "x86-64"), []byte("amd"))
	arm := ocitest.Squashfs(t, ocitest.Meta("hello", "1.0", "arm64"), []byte("arm"))
	signedRef, plainRef := reg.Ref("ext/hello:1.0"), reg.Ref("ext/plain:1.0")

	// Flag mistakes and a wrong password upload nothing.
	if _, errs, code := runCLI(t, "push", amd, signedRef, "--sign"); code != 2 || !strings.Contains(errs, "--key") {
		t.Fatalf("--sign without --key: %d %s", code, errs)
	}
	if _, errs, code := runCLI(t, "push", amd, signedRef, "--key", key+".key"); code != 2 || !strings.Contains(errs, "--sign") {
		t.Fatalf("--key without --sign: %d %s", code, errs)
	}
	t.Setenv("COSIGN_PASSWORD", "wrong")
	if _, errs, code := runCLI(t, "push", amd, signedRef, "--sign", "--key", key+".key"); code != 1 || !strings.Contains(errs, "wrong password") {
		t.Fatalf("wrong password: %d %s", code, errs)
	}
	tg, r := reg.Open(t, "ext/hello:1.0")
	if _, err := tg.Resolve(context.Background(), r.Reference()); err == nil {
		t.Fatal("a push with a wrong password uploaded the tag")
	}
	t.Setenv("COSIGN_PASSWORD", "pw")

	out, errs, code := runCLI(t, "push", "--json", amd, arm, signedRef, "--sign", "--key", key+".key")
	var pushed struct{ Signed []string }
	if code != 0 || json.Unmarshal([]byte(out), &pushed) != nil || len(pushed.Signed) != 3 {
		t.Fatalf("push --sign: %d %s %s", code, out, errs)
	}
	if _, errs, code := runCLI(t, "push", "-q", amd, plainRef); code != 0 {
		t.Fatal(errs)
	}

	fetchDir := t.TempDir()
	fetch := func(ref string, args ...string) (string, int) {
		_, errs, code := runCLI(t, append([]string{"fetch", ref, "-o", fetchDir, "--platform", "x86-64", "--force"}, args...)...)
		return errs, code
	}
	if errs, code := fetch(signedRef, "--key", key+".pub"); code != 0 {
		t.Fatalf("fetch signed: %d %s", code, errs)
	}
	entries, _ := os.ReadDir(fetchDir)
	if len(entries) != 1 {
		t.Fatalf("fetched %v", entries)
	}
	os.RemoveAll(fetchDir)
	os.Mkdir(fetchDir, 0o755)
	for name, c := range map[string]struct {
		ref  string
		args []string
		want string
	}{
		"unsigned":  {plainRef, []string{"--key", key + ".pub"}, "is not signed"},
		"other key": {signedRef, []string{"--key", other + ".pub"}, "no valid signature"},
		"no trust":  {signedRef, nil, "--insecure-allow-unsigned"},
	} {
		errs, code := fetch(c.ref, c.args...)
		if code != 1 || !strings.Contains(errs, c.want) {
			t.Errorf("fetch %s: %d %s", name, code, errs)
		}
		if entries, _ := os.ReadDir(fetchDir); len(entries) != 0 {
			t.Errorf("fetch %s left %v", name, entries)
		}
	}
	// The explicit opt-out works, and says so.
	errs, code = fetch(plainRef, "--insecure-allow-unsigned")
	if code != 0 || !strings.Contains(errs, "WARNING") {
		t.Fatalf("fetch --insecure-allow-unsigned: %d %s", code, errs)
	}
}
