package publish_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"strings"
	"testing"

	"github.com/sysext/sysext/extension"
	"github.com/sysext/sysext/oci"
	"github.com/sysext/sysext/oci/ocitest"
	"github.com/sysext/sysext/publish"
	"github.com/sysext/sysext/verify"
)

func newSigner(t *testing.T) *verify.Signer {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s, err := verify.NewSigner(k)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// Push signs what it wrote, manifests first and the index last, and an
// --append over a signed index needs the same key; the architectures it
// keeps are not signed again.
func TestPushSignsWhatItPushed(t *testing.T) {
	ctx := context.Background()
	tg, ref := ocitest.OpenLayout(t, "1.0")
	img := func(a extension.Arch) string { return ocitest.Squashfs(t, ocitest.Meta("hello", "1.0", a), []byte(a)) }
	key, other := newSigner(t), newSigner(t)

	res, err := publish.Push(ctx, tg, ref, []string{img("x86-64")}, publish.Options{Signer: key, KeyPath: "cosign.key"})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Signed) != 2 || res.Signed[0].Digest != res.Manifests[0].Descriptor.Digest || res.Signed[1].Digest != res.Index.Digest {
		t.Fatalf("signed %+v, want the manifest then the index", res.Signed)
	}

	appendWith := func(s *verify.Signer, allow bool) (*publish.Result, error) {
		return publish.Push(ctx, tg, ref, []string{img("arm64")}, publish.Options{
			Push: oci.PushOptions{Append: true}, Signer: s, KeyPath: "k", AllowUnsigned: allow,
		})
	}
	if _, err := appendWith(nil, false); err == nil || !strings.Contains(err.Error(), "is signed") {
		t.Fatalf("unsigned --append over a signed index: %v", err)
	}
	if _, err := appendWith(other, false); err == nil || !strings.Contains(err.Error(), "not by --key k") {
		t.Fatalf("--append signed by another key: %v", err)
	}
	res, err = appendWith(key, false)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Kept) != 1 || len(res.Signed) != 2 || res.Signed[0].Digest != res.Manifests[0].Descriptor.Digest {
		t.Fatalf("--append signed %+v (kept %v): want the new manifest and the index only", res.Signed, res.Kept)
	}

	signed, err := publish.Sign(ctx, tg, ref, other)
	if err != nil || len(signed) != 3 || signed[2].Digest != res.Index.Digest {
		t.Fatalf("Sign: %+v %v: want both manifests and the index", signed, err)
	}
	if _, err := publish.Sign(ctx, tg, ocitest.NewLayout(t, "nope"), other); err == nil {
		t.Fatal("Sign of a missing layout succeeded")
	}
}
