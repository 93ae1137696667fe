package verify

import (
	"context"
	"strconv"
	"testing"

	"github.com/opencontainers/go-digest"
	"oras.land/oras-go/v2/content/memory"
)

// FuzzParsePolicy: any bytes give a policy or an error, never a panic.
func FuzzParsePolicy(f *testing.F) {
	f.Add([]byte(`{"default": [{"type": "reject"}]}`))
	f.Add([]byte(`{"default": [{"type": "insecureAcceptAnything"}], "transports": {"docker": {"a.example/b": [{"type": "reject"}]}}}`))
	f.Add([]byte(`{"default": [{"type": "sigstoreSigned", "keyData": "Zm9v"}]}`))
	f.Add([]byte("{\n\"default\": [,]\n}"))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := ParsePolicy(b, "fuzz.json", t.TempDir())
		if err == nil && p.Default == nil {
			t.Fatal("policy without default accepted")
		}
	})
}

// FuzzParsePayload: untrusted payloads never panic and never match another
// digest.
func FuzzParsePayload(f *testing.F) {
	d := digest.FromString("x")
	good, _ := newPayload(d, "r.example/x")
	f.Add(good)
	f.Add([]byte(`{"critical": null}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := parsePayload(b, d)
		if err == nil && p.Critical.Image.DockerManifestDigest != d.String() {
			t.Fatal("payload accepted for another digest")
		}
	})
}

// BenchmarkCheckCosign measures finding and checking one cosign signature
// in memory (the per-manifest cost of a pull, without the network).
func BenchmarkCheckCosign(b *testing.B) {
	ctx := context.Background()
	store := memory.New()
	img := pushImage(b, store, "img")
	s := newTestSigner(b)
	if _, err := Sign(ctx, store, img, testRepo, s); err != nil {
		b.Fatal(err)
	}
	r := keyRequirement(s)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := r.Check(ctx, store, img); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCheckKeylessBundle measures a keyless bundle with a log entry
// and a timestamp.
func BenchmarkCheckKeylessBundle(b *testing.B) {
	ctx := context.Background()
	vs := newVirtualSigstore(b)
	trPath := trustedRootFile(b, vs)
	store := memory.New()
	img := pushImage(b, store, "img")
	attachBundle(b, store, img, keylessBundle(b, vs, img.Digest, testIdentity, testIssuer, nowPlus5(), true), false)
	r := keylessRequirement(b, trPath, testIdentity, testIssuer)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := r.Check(ctx, store, img); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSign measures one signing into memory (payload, signature,
// manifest, tag).
func BenchmarkSign(b *testing.B) {
	ctx := context.Background()
	store := memory.New()
	s := newTestSigner(b)
	for i := 0; i < b.N; i++ {
		img := pushImage(b, store, "img"+strconv.Itoa(i))
		if _, err := Sign(ctx, store, img, testRepo, s); err != nil {
			b.Fatal(err)
		}
	}
}
