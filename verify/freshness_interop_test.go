package verify_test

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sysext/sysext/oci/ocitest"
	"github.com/sysext/sysext/verify"
)

// TestFreshnessCosignInterop: the freshness annotations are cosign's own
// `-a key=value` annotations. A signature made by the real cosign v2 (in
// the simple-signing payload) or v3 (on the bundle's statement subject)
// with `-a tag=24 -a timestamp=$(date +%s)` passes a freshness policy for
// tag 24 and not for another tag; a signature made by sysext
// (WithFreshness) passes `cosign verify -a tag=24` (v2 and v3) and fails
// `-a tag=25`.
func TestFreshnessCosignInterop(t *testing.T) {
	env := newCosignEnv(t)
	ctx := context.Background()
	env.must(env.v2, "generate-key-pair", "--output-key-prefix", "cosign")
	priv, pub := filepath.Join(env.home, "cosign.key"), filepath.Join(env.home, "cosign.pub")
	if err := os.WriteFile(filepath.Join(env.home, "policy.json"), []byte(`{"default": [{"type": "sigstoreSigned", "keyPath": "cosign.pub",
  "freshness": {"requireTag": true, "maxAge": "1h"}}]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	policy, err := verify.LoadPolicy(filepath.Join(env.home, "policy.json"), "")
	if err != nil {
		t.Fatal(err)
	}
	reg := ocitest.NewOlareg(t)
	tg, ref := reg.Open(t, "fresh/ext:24")
	repo := ref.Scope()

	// cosign signs with the annotations; we verify them.
	img := pushArtifact(t, tg, "signed by cosign")
	now := strconv.FormatInt(time.Now().Unix(), 10)
	env.must(env.v2, append([]string{"sign", "--key", priv, "--tlog-upload=false", "-a", "tag=24", "-a", "timestamp=" + now, repo + "@" + img.Digest.String()}, env.flags...)...)
	v, err := policy.Verify(ctx, tg, repo+":24", img)
	if err != nil {
		t.Fatalf("a fresh cosign signature for tag 24: %v", err)
	}
	if s := v.Signatures()[0]; s.Tag != "24" || s.SignedAt.Unix() != mustAtoi(t, now) {
		t.Errorf("signature freshness read as %q %v", s.Tag, s.SignedAt)
	}
	if _, err := policy.Verify(ctx, tg, repo+":25", img); err == nil || !strings.Contains(err.Error(), `made for tag "24", not "25"`) {
		t.Errorf("cosign's signature for tag 24 under tag 25: %v", err)
	}
	// cosign v3 writes a Sigstore bundle; its -a annotations sit on the
	// signed statement's subject.
	bundled := pushArtifact(t, tg, "signed by cosign v3")
	env.must(env.v3, append([]string{"sign", "--key", priv, "--use-signing-config=false", "--tlog-upload=false", "-a", "tag=24", "-a", "timestamp=" + now, repo + "@" + bundled.Digest.String()}, env.flags...)...)
	v, err = policy.Verify(ctx, tg, repo+":24", bundled)
	if err != nil {
		t.Fatalf("a fresh cosign v3 bundle for tag 24: %v", err)
	}
	if s := v.Signatures()[0]; s.Format != verify.FormatBundle || s.Tag != "24" || s.SignedAt.Unix() != mustAtoi(t, now) {
		t.Errorf("bundle freshness read as %+v", s)
	}
	if _, err := policy.Verify(ctx, tg, repo+":25", bundled); err == nil || !strings.Contains(err.Error(), `made for tag "24", not "25"`) {
		t.Errorf("cosign v3's bundle for tag 24 under tag 25: %v", err)
	}
	// Signed by cosign without annotations: the policy asks for them.
	plain := pushArtifact(t, tg, "plain cosign")
	env.must(env.v2, append([]string{"sign", "--key", priv, "--tlog-upload=false", repo + "@" + plain.Digest.String()}, env.flags...)...)
	if _, err := policy.Verify(ctx, tg, repo+":24", plain); err == nil {
		t.Error("a signature without freshness annotations passed a freshness policy")
	}

	// We sign with the annotations; cosign checks them with -a.
	ours := pushArtifact(t, tg, "signed by sysext")
	b, err := os.ReadFile(priv)
	if err != nil {
		t.Fatal(err)
	}
	s, err := verify.LoadPrivateKey(b, []byte(password))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := verify.Sign(ctx, tg, ours, repo, s.WithFreshness("24", time.Now())); err != nil {
		t.Fatal(err)
	}
	at := repo + "@" + ours.Digest.String()
	for _, bin := range []string{env.v2, env.v3} {
		env.must(bin, append([]string{"verify", "--key", pub, "--insecure-ignore-tlog", "-a", "tag=24", at}, env.flags...)...)
		if out, err := env.run(bin, append([]string{"verify", "--key", pub, "--insecure-ignore-tlog", "-a", "tag=25", at}, env.flags...)...); err == nil {
			t.Errorf("%s verify -a tag=25 accepted a signature for tag 24:\n%s", filepath.Base(bin), out)
		}
	}
	if _, err := policy.Verify(ctx, tg, repo+":24", ours); err != nil {
		t.Errorf("our own fresh signature: %v", err)
	}
}

func mustAtoi(t *testing.T, s string) int64 {
	t.Helper()
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return n
}
