package verify

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/sigstore/sigstore/pkg/cryptoutils"
	"oras.land/oras-go/v2/content/memory"
)

func writeFile(t *testing.T, dir, name, data string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func pubPEM(t *testing.T, s *Signer) string {
	t.Helper()
	b, err := cryptoutils.MarshalPublicKeyToPEM(s.PublicKey())
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestPolicyScopes(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	acme, other := newTestSigner(t), newTestSigner(t)
	writeFile(t, dir, "acme.pub", pubPEM(t, acme))
	writeFile(t, dir, "other.pub", pubPEM(t, other))
	policy := writeFile(t, dir, "policy.json", `{
  "default": [{"type": "reject"}],
  "transports": {
    "docker": {
      "registry.example": [{"type": "sigstoreSigned", "keyPath": "other.pub"}],
      "registry.example/acme": [{"type": "sigstoreSigned", "keyPath": "acme.pub"}],
      "registry.example/acme/public": [{"type": "insecureAcceptAnything"}],
      "registry.example/acme/ext:testing": [{"type": "insecureAcceptAnything"}],
      "*.example.org": [{"type": "sigstoreSigned", "keyPaths": ["acme.pub", "other.pub"]}]
    }
  }
}`)
	p, err := LoadPolicy(policy, "")
	if err != nil {
		t.Fatal(err)
	}
	store := memory.New()
	img := pushImage(t, store, "img")
	if _, err := Sign(ctx, store, img, testRepo, acme); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		ref   string
		ok    bool
		scope string
	}{
		{"registry.example/acme/ext:1.0", true, "registry.example/acme"},
		{"registry.example/acme/ext@" + img.Digest.String(), true, "registry.example/acme"},
		{"registry.example/beta/ext:1.0", false, "registry.example"}, // host scope: other key
		{"registry.example/acme/public/x:1", true, "registry.example/acme/public"},
		{"registry.example/acme/ext:testing", true, "registry.example/acme/ext:testing"},
		{"mirror.example.org/acme/ext:1", true, "*.example.org"},
		{"elsewhere.test/acme/ext:1", false, "default"},
	}
	for _, c := range cases {
		if _, scope := p.RequirementsFor(ScopeOf(c.ref)); scope != c.scope {
			t.Errorf("%s: scope %q, want %q", c.ref, scope, c.scope)
		}
		v, err := p.Verify(ctx, store, c.ref, img)
		if c.ok != (err == nil) {
			t.Errorf("%s: ok=%v, err=%v", c.ref, c.ok, err)
			continue
		}
		if err != nil {
			continue
		}
		if err := v.Check(img.Digest); err != nil {
			t.Errorf("%s: %v", c.ref, err)
		}
		if (strings.Contains(c.ref, "public") || strings.HasSuffix(c.ref, ":testing")) != v.Unsigned() {
			t.Errorf("%s: unsigned=%v", c.ref, v.Unsigned())
		}
		if !v.Unsigned() && (v.Signer() != acme.Fingerprint() || len(v.Signatures()) != 1) {
			t.Errorf("%s: signer %q, signatures %v", c.ref, v.Signer(), v.Signatures())
		}
	}
	_, err = p.Verify(ctx, store, "elsewhere.test/x:1", img)
	if err == nil || !strings.Contains(err.Error(), "rejects") {
		t.Errorf("reject: %v", err)
	}
}

func TestPolicyVerifiedDigest(t *testing.T) {
	ctx := context.Background()
	store := memory.New()
	img, other := pushImage(t, store, "img"), pushImage(t, store, "other")
	s := newTestSigner(t)
	if _, err := Sign(ctx, store, img, testRepo, s); err != nil {
		t.Fatal(err)
	}
	p := &Policy{Default: []PolicyRequirement{{Type: TypeSigstoreSigned, Sigstore: *keyRequirement(s)}}}
	v, err := p.Verify(ctx, store, testRepo+":1", img)
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Check(other.Digest); err == nil {
		t.Fatal("Verified accepted another digest")
	}
	if _, err := p.Verify(ctx, store, testRepo+":1", other); err == nil {
		t.Fatal("unsigned image verified")
	}
}

func TestPolicyMatchRepository(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := newTestSigner(t)
	writeFile(t, dir, "k.pub", pubPEM(t, s))
	policy := writeFile(t, dir, "policy.json", `{"default": [{"type": "sigstoreSigned", "keyPath": "k.pub", "signedIdentity": {"type": "matchRepository"}}]}`)
	p, err := LoadPolicy(policy, "")
	if err != nil {
		t.Fatal(err)
	}
	store := memory.New()
	img := pushImage(t, store, "img")
	if _, err := Sign(ctx, store, img, testRepo, s); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Verify(ctx, store, testRepo+":1.0", img); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Verify(ctx, store, "registry.example/other/ext:1.0", img); err == nil {
		t.Fatal("signature for another repository accepted")
	}
}

func TestPolicyErrors(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "k.pub", pubPEM(t, newTestSigner(t)))
	cases := []struct {
		name, data string
		line       int
		want       string
	}{
		{"syntax", "{\n  \"default\": [\n    {\"type\": \"reject\"},,\n  ]\n}", 3, "invalid character"},
		{"unknown type", "{\n  \"default\": [{\"type\": \"reject\"}],\n  \"transports\": {\"docker\": {\n    \"a.example/b\": [\n      {\"type\": \"signedByGPG\"}\n    ]\n  }}\n}", 5, `unknown requirement type "signedByGPG"`},
		{"unknown field", "{\n  \"default\": [{\"type\": \"reject\"}],\n  \"defualt\": []\n}", 3, "unknown field"},
		{"wrong type of value", "{\n  \"default\": [\n  {\"type\": 7}]\n}", 3, "cannot unmarshal"},
		{"no default", `{"transports": {}}`, 0, `no "default"`},
		{"empty list", `{"default": []}`, 0, "empty requirement list"},
		{"no key", "{\"default\": [\n{\"type\": \"sigstoreSigned\"}]}", 2, "needs"},
		{"missing key file", "{\"default\": [\n{\"type\": \"sigstoreSigned\", \"keyPath\": \"nope.pub\"}]}", 2, "nope.pub"},
		{"bad key", "{\"default\": [{\"type\": \"sigstoreSigned\", \"keyData\": \"Z2FyYmFnZQ==\"}]}", 1, "not a PEM public key"},
		{"fulcio without CA", `{"default": [{"type": "sigstoreSigned", "fulcio": {"oidcIssuer": "https://x", "subjectEmail": "a@b"}}]}`, 1, "caPath"},
		{"unknown transport", "{\"default\": [{\"type\": \"reject\"}],\n \"transports\": {\"atomic\": {}}}", 2, "unknown transport"},
		{"unsupported signedIdentity", `{"default": [{"type": "sigstoreSigned", "keyPath": "k.pub", "signedIdentity": {"type": "remapIdentity"}}]}`, 1, "signedIdentity"},
		{"trailing data", `{"default": [{"type": "reject"}]} {}`, 1, "extra data"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := writeFile(t, dir, "policy.json", c.data)
			_, err := LoadPolicy(p, "")
			var pe *PolicyError
			if !errors.As(err, &pe) {
				t.Fatalf("want PolicyError, got %v", err)
			}
			if pe.Line != c.line {
				t.Errorf("line %d, want %d (%v)", pe.Line, c.line, err)
			}
			if !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), p) {
				t.Errorf("error %q lacks %q or the file name", err, c.want)
			}
		})
	}
}

func TestTrustOptions(t *testing.T) {
	dir := t.TempDir()
	s := newTestSigner(t)
	key := writeFile(t, dir, "k.pub", pubPEM(t, s))
	rootDir := t.TempDir()

	// Nothing given, no policy file under the root: refuse, say how.
	_, err := TrustOptions{Root: rootDir}.Policy()
	if !errors.Is(err, ErrNoTrust) || !strings.Contains(err.Error(), "--key") || !strings.Contains(err.Error(), "--insecure-allow-unsigned") {
		t.Fatalf("no trust: %v", err)
	}
	// The default policy under --root is used.
	writeFile(t, rootDir, "etc/sysext/keys/k.pub", pubPEM(t, s))
	writeFile(t, rootDir, "etc/sysext/policy.json", `{"default": [{"type": "sigstoreSigned", "keyPath": "/etc/sysext/keys/k.pub"}]}`)
	p, err := TrustOptions{Root: rootDir}.Policy()
	if err != nil {
		t.Fatal(err)
	}
	if p.Default[0].Sigstore.Keys == nil {
		t.Fatal("key not loaded from under the root")
	}
	// --key shorthand.
	p, err = TrustOptions{KeyPaths: []string{key}}.Policy()
	if err != nil || len(p.Default[0].Sigstore.Keys) != 1 {
		t.Fatalf("--key: %v", err)
	}
	// The explicit opt-out.
	p, err = TrustOptions{AllowUnsigned: true}.Policy()
	if err != nil || p.Default[0].Type != TypeInsecureAcceptAnything {
		t.Fatalf("--insecure-allow-unsigned: %v", err)
	}
	if _, err := (TrustOptions{AllowUnsigned: true, KeyPaths: []string{key}}).Policy(); err == nil {
		t.Fatal("--insecure-allow-unsigned with --key accepted")
	}
	// Keyless needs a trusted root and both identity and issuer.
	if _, err := (TrustOptions{CertIdentity: "a@b", CertIssuer: "https://x"}).Policy(); err == nil || !strings.Contains(err.Error(), "--trusted-root") {
		t.Fatalf("keyless without trusted root: %v", err)
	}
	if _, err := (TrustOptions{CertIdentity: "a@b"}).Policy(); err == nil || !strings.Contains(err.Error(), "issuer") {
		t.Fatalf("keyless without issuer: %v", err)
	}
}

func TestScopeOf(t *testing.T) {
	for ref, want := range map[string]Scope{
		"ghcr.io/acme/ext:1.0":                 {TransportDocker, "ghcr.io/acme/ext", "1.0"},
		"localhost:5000/acme/ext":              {TransportDocker, "localhost:5000/acme/ext", ""},
		"localhost:5000/acme/ext:2@sha256:abc": {TransportDocker, "localhost:5000/acme/ext", "2"},
		"oci:/srv/layout:1.0":                  {TransportOCI, "/srv/layout", "1.0"},
		"oci:/srv/layout":                      {TransportOCI, "/srv/layout", ""},
		"oci:/srv/layout:2@sha256:abc":         {TransportOCI, "/srv/layout", "2"},
		"oci:/srv/layout@sha256:abc":           {TransportOCI, "/srv/layout", ""},
	} {
		if got := ScopeOf(ref); got != want {
			t.Errorf("ScopeOf(%q) = %v, want %v", ref, got, want)
		}
	}
}

// TestVerifyEntryThroughIndex: a signature on the index covers the
// manifests it lists (cosign sign INDEX without --recursive), and only those.
func TestVerifyEntryThroughIndex(t *testing.T) {
	ctx := context.Background()
	store := memory.New()
	amd, arm, stray := pushImage(t, store, "amd"), pushImage(t, store, "arm"), pushImage(t, store, "stray")
	idx := pushIndex(t, store, amd, arm)
	s := newTestSigner(t)
	if _, err := Sign(ctx, store, idx, testRepo, s); err != nil {
		t.Fatal(err)
	}
	p := &Policy{Default: []PolicyRequirement{{Type: TypeSigstoreSigned, Sigstore: *keyRequirement(s)}}}
	v, err := p.VerifyEntry(ctx, store, testRepo+":1", idx, arm)
	if err != nil {
		t.Fatal(err)
	}
	if v.Check(arm.Digest) != nil || v.Signer() != s.Fingerprint() {
		t.Fatalf("verified %v for %s", v.Digest(), v.Signer())
	}
	if _, err := p.VerifyEntry(ctx, store, testRepo+":1", idx, stray); err == nil || !strings.Contains(err.Error(), "does not list it") {
		t.Fatalf("manifest outside the signed index accepted: %v", err)
	}
	unsignedIdx := pushIndex(t, store, amd)
	if _, err := p.VerifyEntry(ctx, store, testRepo+":1", unsignedIdx, amd); err == nil {
		t.Fatal("unsigned index and manifest accepted")
	}
}

// TestRelativePathsOnTheHost: without a root, a relative --policy and a
// relative --key are relative to the working directory, as the user typed
// them (the root-confined reader once made them relative to /).
func TestRelativePathsOnTheHost(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	_, pub, err := GenerateKeyPair(nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile("cosign.pub", pub, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile("policy.json", []byte(`{"default":[{"type":"sigstoreSigned","keyPath":"cosign.pub"}]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadPolicy("policy.json", ""); err != nil {
		t.Fatalf("LoadPolicy(relative, no root): %v", err)
	}
	if _, err := (TrustOptions{KeyPaths: []string{"cosign.pub"}}).Policy(); err != nil {
		t.Fatalf("--key relative, no root: %v", err)
	}
}

// TestVerifyTree: an index is verified by its own signature, or when every
// image manifest it lists is signed; one unsigned manifest leaves it
// unverified and says which.
func TestVerifyTree(t *testing.T) {
	ctx := context.Background()
	store := memory.New()
	amd, arm := pushImage(t, store, "amd"), pushImage(t, store, "arm")
	s := newTestSigner(t)
	p := &Policy{Default: []PolicyRequirement{{Type: TypeSigstoreSigned, Sigstore: *keyRequirement(s)}}}

	// Signed index: it and what it lists are verified.
	idx := pushIndex(t, store, amd, arm)
	if _, err := Sign(ctx, store, idx, testRepo, s); err != nil {
		t.Fatal(err)
	}
	rep, err := p.VerifyTree(ctx, store, testRepo+":1", idx)
	if err != nil || !rep.Verified || len(rep.Signatures) != 1 || len(rep.Manifests) != 2 || !rep.Manifests[0].Verified || !rep.Manifests[1].Verified {
		t.Fatalf("signed index: %+v %v", rep, err)
	}

	// Unsigned index over signed manifests: verified through them.
	amd2, arm2 := pushImage(t, store, "amd2"), pushImage(t, store, "arm2")
	for _, d := range []ocispec.Descriptor{amd2, arm2} {
		if _, err := Sign(ctx, store, d, testRepo, s); err != nil {
			t.Fatal(err)
		}
	}
	rep, err = p.VerifyTree(ctx, store, testRepo+":2", pushIndex(t, store, amd2, arm2))
	if err != nil || !rep.Verified || rep.Err != nil || len(rep.Signatures) != 0 {
		t.Fatalf("index of signed manifests: %+v %v", rep, err)
	}

	// One manifest unsigned: not verified, and that manifest says why.
	other := pushImage(t, store, "other")
	rep, err = p.VerifyTree(ctx, store, testRepo+":3", pushIndex(t, store, amd2, other))
	if err != nil || rep.Verified || rep.Err == nil || !rep.Manifests[0].Verified || rep.Manifests[1].Verified || rep.Manifests[1].Err == nil {
		t.Fatalf("index with an unsigned manifest: %+v %v", rep, err)
	}

	// A single manifest is its own tree.
	rep, err = p.VerifyTree(ctx, store, testRepo+":4", amd2)
	if err != nil || !rep.Verified || rep.Manifests != nil {
		t.Fatalf("single manifest: %+v %v", rep, err)
	}
}
