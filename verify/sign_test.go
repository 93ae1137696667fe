package verify

import (
	"bytes"
	"context"
	"crypto"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/sysext/sysext/internal/mediatype"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/content/memory"
)

func TestKeyPairRoundTrip(t *testing.T) {
	priv, pub, err := GenerateKeyPair([]byte("s3cret"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(priv, []byte("-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----")) {
		t.Fatalf("private key PEM type: %s", priv[:60])
	}
	s, err := LoadPrivateKey(priv, []byte("s3cret"))
	if err != nil {
		t.Fatal(err)
	}
	pk, err := LoadPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	if KeyFingerprint(pk) != s.Fingerprint() {
		t.Fatalf("public key %s does not match private key %s", KeyFingerprint(pk), s.Fingerprint())
	}
	// A signature made with the loaded key verifies with the public key.
	store := memory.New()
	img := pushImage(t, store, "img")
	if _, err := Sign(context.Background(), store, img, testRepo, s); err != nil {
		t.Fatal(err)
	}
	r := &Requirement{Keys: []crypto.PublicKey{pk}}
	if _, err := r.Check(context.Background(), store, img); err != nil {
		t.Fatal(err)
	}
}

func TestWrongPassword(t *testing.T) {
	priv, _, err := GenerateKeyPair([]byte("right"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = LoadPrivateKey(priv, []byte("wrong"))
	if !errors.Is(err, ErrWrongPassword) {
		t.Fatalf("want ErrWrongPassword, got %v", err)
	}
	if !strings.Contains(err.Error(), "COSIGN_PASSWORD") {
		t.Errorf("error does not say how to give the password: %v", err)
	}
	if _, err := LoadPrivateKey([]byte("garbage"), nil); err == nil {
		t.Fatal("garbage private key accepted")
	}
	_, pub, _ := GenerateKeyPair(nil)
	if _, err := LoadPrivateKey(pub, nil); err == nil || !strings.Contains(err.Error(), "not a cosign encrypted private key") {
		t.Fatalf("public key as private key: %v", err)
	}
}

func TestSignVerify(t *testing.T) {
	ctx := context.Background()
	store := memory.New()
	img := pushImage(t, store, "img")
	s := newTestSigner(t)
	res, err := Sign(ctx, store, img, testRepo, s)
	if err != nil {
		t.Fatal(err)
	}
	if res.Tag != "sha256-"+img.Digest.Encoded()+".sig" {
		t.Fatalf("tag %s", res.Tag)
	}
	sigs, err := keyRequirement(s).Check(ctx, store, img)
	if err != nil {
		t.Fatal(err)
	}
	if len(sigs) != 1 || sigs[0].Signer != s.Fingerprint() || sigs[0].Format != FormatCosign || sigs[0].Reference != testRepo || sigs[0].Digest != img.Digest {
		t.Fatalf("signatures: %+v", sigs)
	}
	if sigs[0].Tlog {
		t.Fatal("no log was checked, yet Tlog is set")
	}
}

func TestSignAppends(t *testing.T) {
	ctx := context.Background()
	store := memory.New()
	img := pushImage(t, store, "img")
	a, b := newTestSigner(t), newTestSigner(t)
	if _, err := Sign(ctx, store, img, testRepo, a); err != nil {
		t.Fatal(err)
	}
	res, err := Sign(ctx, store, img, testRepo, b)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := content.FetchAll(ctx, store, res.Manifest)
	if err != nil {
		t.Fatal(err)
	}
	var m ocispec.Manifest
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	if len(m.Layers) != 2 {
		t.Fatalf("signature manifest has %d layers, want 2 (appended)", len(m.Layers))
	}
	for _, s := range []*Signer{a, b} {
		if _, err := keyRequirement(s).Check(ctx, store, img); err != nil {
			t.Fatalf("signer %s: %v", s.Fingerprint(), err)
		}
	}
}

func TestSignTree(t *testing.T) {
	ctx := context.Background()
	store := memory.New()
	amd, arm := pushImage(t, store, "amd64"), pushImage(t, store, "arm64")
	idx := pushIndex(t, store, amd, arm)
	s := newTestSigner(t)
	signed, err := SignTree(ctx, store, idx, testRepo, s)
	if err != nil {
		t.Fatal(err)
	}
	if len(signed) != 3 || signed[2].Digest != idx.Digest {
		t.Fatalf("signed %+v", signed)
	}
	for _, d := range []ocispec.Descriptor{amd, arm, idx} {
		if _, err := keyRequirement(s).Check(ctx, store, d); err != nil {
			t.Fatalf("%s: %v", d.Digest, err)
		}
	}
}

// A Docker manifest list is an index too: its manifests are signed, as
// an OCI index's are, so a node that picks its platform finds a signature.
func TestSignTreeDockerList(t *testing.T) {
	ctx := context.Background()
	store := memory.New()
	var ms []ocispec.Descriptor
	for _, arch := range []string{"amd64", "arm64"} {
		b, err := json.Marshal(ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: mediatype.DockerManifest,
			Config: ocispec.DescriptorEmptyJSON, Layers: []ocispec.Descriptor{pushImage(t, store, arch)}})
		if err != nil {
			t.Fatal(err)
		}
		d := content.NewDescriptorFromBytes(mediatype.DockerManifest, b)
		mustPush(t, store, d, b)
		ms = append(ms, d)
	}
	b, err := json.Marshal(ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: mediatype.DockerManifestList, Manifests: ms})
	if err != nil {
		t.Fatal(err)
	}
	list := content.NewDescriptorFromBytes(mediatype.DockerManifestList, b)
	mustPush(t, store, list, b)
	s := newTestSigner(t)
	signed, err := SignTree(ctx, store, list, testRepo, s)
	if err != nil {
		t.Fatal(err)
	}
	if len(signed) != 3 {
		t.Fatalf("signed %d, want the list and its 2 manifests: %+v", len(signed), signed)
	}
	for _, d := range append(ms, list) {
		if _, err := keyRequirement(s).Check(ctx, store, d); err != nil {
			t.Fatalf("%s: %v", d.Digest, err)
		}
	}
}

func TestUnsigned(t *testing.T) {
	store := memory.New()
	img := pushImage(t, store, "img")
	_, err := keyRequirement(newTestSigner(t)).Check(context.Background(), store, img)
	var nv *NoValidSignatureError
	if !errors.As(err, &nv) || nv.Found != 0 || !strings.Contains(err.Error(), "is not signed") {
		t.Fatalf("want 'not signed', got %v", err)
	}
}

func TestOtherKey(t *testing.T) {
	ctx := context.Background()
	store := memory.New()
	img := pushImage(t, store, "img")
	if _, err := Sign(ctx, store, img, testRepo, newTestSigner(t)); err != nil {
		t.Fatal(err)
	}
	_, err := keyRequirement(newTestSigner(t)).Check(ctx, store, img)
	var nv *NoValidSignatureError
	if !errors.As(err, &nv) || nv.Found != 1 {
		t.Fatalf("other key accepted or wrong error: %v", err)
	}
	if !strings.Contains(err.Error(), "no valid signature") {
		t.Errorf("unclear error: %v", err)
	}
}

// sigManifest returns the layers of the cosign signature manifest of d.
func sigLayers(t *testing.T, store *memory.Store, d ocispec.Descriptor) []ocispec.Descriptor {
	t.Helper()
	ctx := context.Background()
	md, err := store.Resolve(ctx, SignatureTag(d.Digest))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := content.FetchAll(ctx, store, md)
	if err != nil {
		t.Fatal(err)
	}
	var m ocispec.Manifest
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	return m.Layers
}

// putSigManifest stores layers as the signature manifest of d.
func putSigManifest(t *testing.T, store *memory.Store, d ocispec.Descriptor, layers []ocispec.Descriptor) {
	t.Helper()
	cfg, _ := signatureConfig(layers)
	cd := content.NewDescriptorFromBytes(ocispec.MediaTypeImageConfig, cfg)
	mustPush(t, store, cd, cfg)
	m := ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest, Config: cd, Layers: layers}
	b, _ := json.Marshal(m)
	md := content.NewDescriptorFromBytes(ocispec.MediaTypeImageManifest, b)
	mustPush(t, store, md, b)
	if err := store.Tag(context.Background(), md, SignatureTag(d.Digest)); err != nil {
		t.Fatal(err)
	}
}

func TestSignatureOverAnotherDigest(t *testing.T) {
	ctx := context.Background()
	store := memory.New()
	good, evil := pushImage(t, store, "good"), pushImage(t, store, "evil")
	s := newTestSigner(t)
	if _, err := Sign(ctx, store, good, testRepo, s); err != nil {
		t.Fatal(err)
	}
	// Replay good's valid signature as evil's.
	putSigManifest(t, store, evil, sigLayers(t, store, good))
	_, err := keyRequirement(s).Check(ctx, store, evil)
	if err == nil || !strings.Contains(err.Error(), "signature is for manifest "+good.Digest.String()) {
		t.Fatalf("replayed signature: %v", err)
	}
}

func TestTamperedPayload(t *testing.T) {
	ctx := context.Background()
	store := memory.New()
	good, evil := pushImage(t, store, "good"), pushImage(t, store, "evil")
	s := newTestSigner(t)
	if _, err := Sign(ctx, store, good, testRepo, s); err != nil {
		t.Fatal(err)
	}
	l := sigLayers(t, store, good)[0]
	payload, _ := content.FetchAll(ctx, store, l)
	tampered := bytes.Replace(payload, []byte(good.Digest.String()), []byte(evil.Digest.String()), 1)
	nl := content.NewDescriptorFromBytes(MediaTypeSimpleSigning, tampered)
	nl.Annotations = l.Annotations
	mustPush(t, store, nl, tampered)
	putSigManifest(t, store, evil, []ocispec.Descriptor{nl})
	_, err := keyRequirement(s).Check(ctx, store, evil)
	if err == nil || !strings.Contains(err.Error(), "failed to verify signature") {
		t.Fatalf("tampered payload: %v", err)
	}
}

func TestGarbageAnnotations(t *testing.T) {
	ctx := context.Background()
	s := newTestSigner(t)
	cases := map[string]map[string]string{
		"not base64":        {AnnotationSignature: "!!!not base64!!!"},
		"missing signature": {"other": "x"},
		"empty signature":   {AnnotationSignature: ""},
		"garbage cert":      {AnnotationSignature: base64.StdEncoding.EncodeToString([]byte("sig")), AnnotationCertificate: "-----BEGIN CERTIFICATE-----\nZm9v\n-----END CERTIFICATE-----\n"},
		"garbage bundle":    {AnnotationSignature: base64.StdEncoding.EncodeToString([]byte("sig")), AnnotationRekorBundle: "{not json"},
		"random signature":  {AnnotationSignature: base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, 70))},
	}
	for name, ann := range cases {
		t.Run(name, func(t *testing.T) {
			store := memory.New()
			img := pushImage(t, store, "img")
			payload, _ := newPayload(img.Digest, testRepo)
			l := content.NewDescriptorFromBytes(MediaTypeSimpleSigning, payload)
			l.Annotations = ann
			mustPush(t, store, l, payload)
			putSigManifest(t, store, img, []ocispec.Descriptor{l})
			_, err := keyRequirement(s).Check(ctx, store, img)
			var nv *NoValidSignatureError
			if !errors.As(err, &nv) {
				t.Fatalf("want NoValidSignatureError, got %v", err)
			}
			if !strings.Contains(err.Error(), "layer 0") {
				t.Errorf("error does not say which signature: %v", err)
			}
		})
	}
}

func TestGarbageSignatureManifest(t *testing.T) {
	ctx := context.Background()
	store := memory.New()
	img := pushImage(t, store, "img")
	junk := []byte("this is not json")
	d := content.NewDescriptorFromBytes("application/octet-stream", junk)
	mustPush(t, store, d, junk)
	if err := store.Tag(ctx, d, SignatureTag(img.Digest)); err != nil {
		t.Fatal(err)
	}
	_, err := keyRequirement(newTestSigner(t)).Check(ctx, store, img)
	if err == nil || !strings.Contains(err.Error(), "not an image manifest") {
		t.Fatalf("junk manifest: %v", err)
	}
	// Signing on top of it refuses rather than overwriting blindly.
	if _, err := Sign(ctx, store, img, testRepo, newTestSigner(t)); err == nil {
		t.Fatal("signed over a junk signature manifest")
	}
}

func TestRepositoryIdentity(t *testing.T) {
	ctx := context.Background()
	store := memory.New()
	img := pushImage(t, store, "img")
	s := newTestSigner(t)
	if _, err := Sign(ctx, store, img, testRepo, s); err != nil {
		t.Fatal(err)
	}
	r := keyRequirement(s)
	r.Repository = testRepo
	if _, err := r.Check(ctx, store, img); err != nil {
		t.Fatal(err)
	}
	r.Repository = "registry.example/other/repo"
	if _, err := r.Check(ctx, store, img); err == nil || !strings.Contains(err.Error(), "names repository") {
		t.Fatalf("repository mismatch accepted: %v", err)
	}
}

// TestSecondKeySigned: a requirement with several keys accepts a signature
// by any of them, whichever order they are tried in.
func TestSecondKeySigned(t *testing.T) {
	ctx := context.Background()
	store := memory.New()
	img := pushImage(t, store, "img")
	a, b := newTestSigner(t), newTestSigner(t)
	if _, err := Sign(ctx, store, img, testRepo, b); err != nil {
		t.Fatal(err)
	}
	sigs, err := keyRequirement(a, b).Check(ctx, store, img)
	if err != nil {
		t.Fatal(err)
	}
	if sigs[0].Signer != b.Fingerprint() {
		t.Fatalf("signer %s, want %s", sigs[0].Signer, b.Fingerprint())
	}
}
