package verify

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/sigstore/sigstore-go/pkg/root"
	"github.com/sigstore/sigstore-go/pkg/testing/ca"

	"github.com/sigstore/sigstore-go/pkg/tlog"
	"github.com/sigstore/sigstore/pkg/cryptoutils"
	"github.com/sysext/sysext/verify/internal/sigstoretest"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/content/memory"
)

const (
	testIdentity = "builder@example.com"
	testIssuer   = "https://issuer.example.com"
)

func newVirtualSigstore(t testing.TB) *ca.VirtualSigstore {
	t.Helper()
	vs, err := ca.NewVirtualSigstore()
	if err != nil {
		t.Fatal(err)
	}
	return vs
}

// trustedRootFile writes the virtual Sigstore's trusted root as a
// trusted_root.json, the file a node is given with --trusted-root.
func trustedRootFile(t testing.TB, vs *ca.VirtualSigstore) string {
	return sigstoretest.TrustedRootFile(t, vs)
}

func loadTrustedRoot(t testing.TB, p string) *root.TrustedRoot {
	t.Helper()
	tr, err := root.NewTrustedRootFromPath(p)
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

// statement is what cosign v3 signs for an image: an in-toto statement whose
// subject is the manifest digest.
func statement(d digest.Digest) []byte {
	return statementOf(d, cosignSignPredicate)
}

func statementOf(d digest.Digest, predicate string) []byte {
	return sigstoretest.Statement(d, predicate)
}

// keylessBundle makes a Sigstore bundle v0.3 (DSSE) as cosign v3 would for
// d, signed by identity/issuer through the virtual Sigstore at
// integratedTime. withTSA adds the timestamp authority's timestamp.
func keylessBundle(t testing.TB, vs *ca.VirtualSigstore, d digest.Digest, identity, issuer string, integratedTime time.Time, withTSA bool) []byte {
	return keylessBundleOf(t, vs, statement(d), identity, issuer, integratedTime, withTSA)
}

func keylessBundleOf(t testing.TB, vs *ca.VirtualSigstore, stmt []byte, identity, issuer string, integratedTime time.Time, withTSA bool) []byte {
	return sigstoretest.Bundle(t, vs, stmt, identity, issuer, integratedTime, withTSA)
}

// attachBundle stores b as an OCI 1.1 referrer of img, the way cosign v3
// does; fallbackTag also records it under the sha256-<hex> tag index.
func attachBundle(t testing.TB, store *memory.Store, img ocispec.Descriptor, b []byte, useFallbackTag bool) {
	t.Helper()
	layer := content.NewDescriptorFromBytes(MediaTypeBundleV03, b)
	mustPush(t, store, layer, b)
	mustPush(t, store, ocispec.DescriptorEmptyJSON, ocispec.DescriptorEmptyJSON.Data)
	m := ocispec.Manifest{
		Versioned:    specs.Versioned{SchemaVersion: 2},
		MediaType:    ocispec.MediaTypeImageManifest,
		ArtifactType: MediaTypeBundleV03,
		Config:       ocispec.DescriptorEmptyJSON,
		Layers:       []ocispec.Descriptor{layer},
		Annotations:  map[string]string{"dev.sigstore.bundle.predicateType": cosignSignPredicate},
	}
	if !useFallbackTag {
		m.Subject = &img
	}
	mb, _ := json.Marshal(m)
	md := content.NewDescriptorFromBytes(ocispec.MediaTypeImageManifest, mb)
	mustPush(t, store, md, mb)
	if useFallbackTag {
		md.ArtifactType = MediaTypeBundleV03
		idx := pushIndex(t, store, md)
		if err := store.Tag(context.Background(), idx, fallbackTag(img.Digest)); err != nil {
			t.Fatal(err)
		}
	}
}

func nowPlus5() time.Time { return time.Now().Add(5 * time.Minute) }

func keylessRequirement(t testing.TB, trPath, identity, issuer string) *Requirement {
	return &Requirement{
		Identities:      []Identity{{Subject: identity, Issuer: issuer}},
		TrustedMaterial: loadTrustedRoot(t, trPath),
	}
}

func TestKeylessBundle(t *testing.T) {
	ctx := context.Background()
	vs := newVirtualSigstore(t)
	trPath := trustedRootFile(t, vs)
	for _, fallback := range []bool{false, true} {
		t.Run(fmt.Sprintf("fallbackTag=%v", fallback), func(t *testing.T) {
			store := memory.New()
			img := pushImage(t, store, "img")
			attachBundle(t, store, img, keylessBundle(t, vs, img.Digest, testIdentity, testIssuer, time.Now().Add(5*time.Minute), true), fallback)
			sigs, err := keylessRequirement(t, trPath, testIdentity, testIssuer).Check(ctx, store, img)
			if err != nil {
				t.Fatal(err)
			}
			if len(sigs) != 1 || sigs[0].Format != FormatBundle || !sigs[0].Tlog || sigs[0].Signer != testIdentity+" from "+testIssuer {
				t.Fatalf("signatures %+v", sigs)
			}
			// A regexp identity works as well.
			r := keylessRequirement(t, trPath, "", "")
			r.Identities = []Identity{{SubjectRegexp: `^builder@example\.com$`, IssuerRegexp: `^https://issuer\.example\.com$`}}
			if _, err := r.Check(ctx, store, img); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestKeylessBundleRefused(t *testing.T) {
	ctx := context.Background()
	vs := newVirtualSigstore(t)
	trPath := trustedRootFile(t, vs)
	other := newVirtualSigstore(t)
	cases := []struct {
		name             string
		vs               *ca.VirtualSigstore
		identity, issuer string
		at               time.Time
		tsa              bool
		subject          string // "": the image itself
		want             string
		ignoreTlog       bool
	}{
		{"other identity", vs, "mallory@example.com", testIssuer, time.Now().Add(5 * time.Minute), true, "", "failed to verify certificate identity", false},
		{"other issuer", vs, testIdentity, "https://evil.example.com", time.Now().Add(5 * time.Minute), true, "", "failed to verify certificate identity", false},
		{"expired certificate", vs, testIdentity, testIssuer, time.Now().Add(30 * time.Minute), false, "", "certificate validity", false},
		{"other CA, tlog ignored", other, testIdentity, testIssuer, time.Now().Add(5 * time.Minute), false, "", "certificate", true},
		{"other CA", other, testIdentity, testIssuer, time.Now().Add(5 * time.Minute), true, "", "verify", false},
		{"other digest", vs, testIdentity, testIssuer, time.Now().Add(5 * time.Minute), true, "other", "digest", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			store := memory.New()
			img := pushImage(t, store, "img")
			d := img.Digest
			if c.subject != "" {
				d = digest.FromString(c.subject)
			}
			attachBundle(t, store, img, keylessBundle(t, c.vs, d, c.identity, c.issuer, c.at, c.tsa), false)
			r := keylessRequirement(t, trPath, testIdentity, testIssuer)
			r.IgnoreTlog = c.ignoreTlog
			_, err := r.Check(ctx, store, img)
			if err == nil {
				t.Fatal("accepted")
			}
			t.Log(err)
			if !strings.Contains(err.Error(), c.want) {
				t.Fatalf("want %q in: %v", c.want, err)
			}
		})
	}
}

// TestKeylessCosignFormat: a keyless signature in cosign's .sig format
// (certificate and Rekor bundle annotations), as cosign v2 writes it.
func TestKeylessCosignFormat(t *testing.T) {
	ctx := context.Background()
	vs := newVirtualSigstore(t)
	trPath := trustedRootFile(t, vs)
	store := memory.New()
	img := pushImage(t, store, "img")
	payload, _ := newPayload(img.Digest, testRepo)
	ent, err := vs.Sign(testIdentity, testIssuer, payload)
	if err != nil {
		t.Fatal(err)
	}
	vc, _ := ent.VerificationContent()
	sc, _ := ent.SignatureContent()
	entries, _ := ent.TlogEntries()
	tle := entries[0].TransparencyLogEntry()
	set, err := vs.RekorSignPayload(tlog.RekorPayload{
		Body:           base64.StdEncoding.EncodeToString(tle.CanonicalizedBody),
		IntegratedTime: tle.IntegratedTime,
		LogIndex:       tle.LogIndex,
		LogID:          hex.EncodeToString(tle.LogId.KeyId),
	})
	if err != nil {
		t.Fatal(err)
	}
	rb, _ := json.Marshal(map[string]any{
		"SignedEntryTimestamp": set,
		"Payload": map[string]any{
			"body":           base64.StdEncoding.EncodeToString(tle.CanonicalizedBody),
			"integratedTime": tle.IntegratedTime,
			"logIndex":       tle.LogIndex,
			"logID":          hex.EncodeToString(tle.LogId.KeyId),
		},
	})
	certPEM, _ := cryptoutils.MarshalCertificateToPEM(vc.Certificate())
	l := content.NewDescriptorFromBytes(MediaTypeSimpleSigning, payload)
	l.Annotations = map[string]string{
		AnnotationSignature:   base64.StdEncoding.EncodeToString(sc.Signature()),
		AnnotationCertificate: string(certPEM),
		AnnotationRekorBundle: string(rb),
	}
	mustPush(t, store, l, payload)
	putSigManifest(t, store, img, []ocispec.Descriptor{l})

	sigs, err := keylessRequirement(t, trPath, testIdentity, testIssuer).Check(ctx, store, img)
	if err != nil {
		t.Fatal(err)
	}
	if !sigs[0].Tlog || sigs[0].Format != FormatCosign {
		t.Fatalf("signature %+v", sigs[0])
	}
	if _, err := keylessRequirement(t, trPath, "mallory@example.com", testIssuer).Check(ctx, store, img); err == nil {
		t.Fatal("other identity accepted")
	}
	// A key requirement does not accept a certificate signature.
	if _, err := keyRequirement(newTestSigner(t)).Check(ctx, store, img); err == nil {
		t.Fatal("certificate signature accepted for a key requirement")
	}
}

// TestKeylessPolicyFile: a policy file trusting a keyless identity through a
// trusted root, as a node would be configured.
func TestKeylessPolicyFile(t *testing.T) {
	ctx := context.Background()
	vs := newVirtualSigstore(t)
	trPath := trustedRootFile(t, vs)
	dir := t.TempDir()
	pol := filepath.Join(dir, "policy.json")
	data := fmt.Sprintf(`{"default": [{"type": "sigstoreSigned", "trustedRootPath": %q,
  "fulcio": {"oidcIssuer": %q, "subjectEmail": %q}}]}`, trPath, testIssuer, testIdentity)
	if err := os.WriteFile(pol, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
	p, err := LoadPolicy(pol, "")
	if err != nil {
		t.Fatal(err)
	}
	store := memory.New()
	good, bad := pushImage(t, store, "good"), pushImage(t, store, "bad")
	attachBundle(t, store, good, keylessBundle(t, vs, good.Digest, testIdentity, testIssuer, time.Now().Add(5*time.Minute), true), false)
	attachBundle(t, store, bad, keylessBundle(t, vs, bad.Digest, "mallory@example.com", testIssuer, time.Now().Add(5*time.Minute), true), false)
	v, err := p.Verify(ctx, store, testRepo+":1", good)
	if err != nil {
		t.Fatal(err)
	}
	if v.Signer() != testIdentity+" from "+testIssuer || v.Check(good.Digest) != nil {
		t.Fatalf("verified %+v", v)
	}
	if _, err := p.Verify(ctx, store, testRepo+":1", bad); err == nil {
		t.Fatal("other identity accepted by the policy")
	}
}

// TestKeyWithLogRequired: with a trusted root holding a log key, a key
// signature without a log entry is refused unless the log is ignored.
func TestKeyWithLogRequired(t *testing.T) {
	ctx := context.Background()
	vs := newVirtualSigstore(t)
	tr := loadTrustedRoot(t, trustedRootFile(t, vs))
	store := memory.New()
	img := pushImage(t, store, "img")
	s := newTestSigner(t)
	if _, err := Sign(ctx, store, img, testRepo, s); err != nil {
		t.Fatal(err)
	}
	r := keyRequirement(s)
	r.TrustedMaterial = tr
	if _, err := r.Check(ctx, store, img); err == nil || !strings.Contains(err.Error(), "log") {
		t.Fatalf("signature without a log entry accepted: %v", err)
	}
	r.IgnoreTlog = true
	sigs, err := r.Check(ctx, store, img)
	if err != nil {
		t.Fatal(err)
	}
	if sigs[0].Tlog {
		t.Fatal("Tlog set though the log was ignored")
	}
}

// TestAttestationIsNotASignature: a bundle over the digest with another
// predicate (an SBOM, provenance) does not count as a signature.
func TestAttestationIsNotASignature(t *testing.T) {
	ctx := context.Background()
	vs := newVirtualSigstore(t)
	trPath := trustedRootFile(t, vs)
	store := memory.New()
	img := pushImage(t, store, "img")
	attachBundle(t, store, img, keylessBundleOf(t, vs, statementOf(img.Digest, "https://spdx.dev/Document"), testIdentity, testIssuer, nowPlus5(), true), false)
	_, err := keylessRequirement(t, trPath, testIdentity, testIssuer).Check(ctx, store, img)
	if err == nil || !strings.Contains(err.Error(), "attestation") {
		t.Fatalf("attestation accepted as a signature: %v", err)
	}
}
