package verify

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sigstore/sigstore/pkg/cryptoutils"
	"oras.land/oras-go/v2/content/memory"
)

// TestFreshnessRefusesReplayedSignatures: a policy with "freshness" refuses
// a valid signature made for another tag, or made too long ago (an old
// signed build served again), and accepts a fresh one for the tag. Without
// it, every valid signature still counts (the default is unchanged).
func TestFreshnessRefusesReplayedSignatures(t *testing.T) {
	ctx := context.Background()
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	s := newTestSigner(t)
	pub, err := cryptoutils.MarshalPublicKeyToPEM(s.PublicKey())
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "k.pub"), pub, 0o644); err != nil {
		t.Fatal(err)
	}
	policy := func(freshness string) *Policy {
		t.Helper()
		b := `{"default": [{"type": "sigstoreSigned", "keyPath": "k.pub"` + freshness + `}]}`
		p, err := ParsePolicy([]byte(b), filepath.Join(dir, "policy.json"), "")
		if err != nil {
			t.Fatal(err)
		}
		for i := range p.Default {
			p.Default[i].Sigstore.Freshness.Now = func() time.Time { return now }
		}
		return p
	}
	fresh := policy(`, "freshness": {"requireTag": true, "maxAge": "30d"}`)
	plain := policy("")
	ref := testRepo + ":24"

	cases := []struct {
		name   string
		signer *Signer
		ok     bool
		why    string
	}{
		{"fresh, for the tag", s.WithFreshness("24", now.Add(-time.Hour)), true, ""},
		{"40 days old", s.WithFreshness("24", now.Add(-40*24*time.Hour)), false, "freshness.maxAge"},
		{"for another tag", s.WithFreshness("23", now.Add(-time.Hour)), false, `made for tag "23", not "24"`},
		{"no annotations", s, false, "names no tag"},
		{"no time", s.Annotate(map[string]string{"tag": "24"}), false, "no signing time"},
		{"in the future", s.WithFreshness("24", now.Add(48*time.Hour)), false, "in the future"},
		{"cosign -a, RFC 3339", s.Annotate(map[string]string{"tag": "24", "timestamp": now.Add(-time.Hour).Format(time.RFC3339)}), true, ""},
		{"unreadable time", s.Annotate(map[string]string{"tag": "24", "timestamp": "yesterday"}), false, "neither Unix seconds"},
	}
	for _, c := range cases {
		store := memory.New()
		img := pushImage(t, store, c.name)
		if _, err := Sign(ctx, store, img, testRepo, c.signer); err != nil {
			t.Fatal(err)
		}
		_, err := fresh.Verify(ctx, store, ref, img)
		if c.ok && err != nil {
			t.Errorf("%s: refused: %v", c.name, err)
		}
		if !c.ok && (err == nil || !strings.Contains(err.Error(), c.why)) {
			t.Errorf("%s: %v, want a refusal saying %q", c.name, err, c.why)
		}
		// Without freshness in the policy, any valid signature counts.
		if _, err := plain.Verify(ctx, store, ref, img); err != nil {
			t.Errorf("%s: refused without freshness: %v", c.name, err)
		}
	}
	// By digest the manifest is named itself: the tag is not asked for.
	store := memory.New()
	img := pushImage(t, store, "by digest")
	if _, err := Sign(ctx, store, img, testRepo, s.WithFreshness("", now)); err != nil {
		t.Fatal(err)
	}
	if _, err := fresh.Verify(ctx, store, testRepo+"@"+img.Digest.String(), img); err != nil {
		t.Errorf("by digest: %v", err)
	}
	for _, bad := range []string{`, "freshness": {}`, `, "freshness": {"maxAge": "soon"}`, `, "freshness": {"maxAge": "-1h"}`} {
		b := `{"default": [{"type": "sigstoreSigned", "keyPath": "k.pub"` + bad + `}]}`
		if _, err := ParsePolicy([]byte(b), filepath.Join(dir, "policy.json"), ""); err == nil || !strings.Contains(err.Error(), "line 1") {
			t.Errorf("policy %s: %v", bad, err)
		}
	}
}
