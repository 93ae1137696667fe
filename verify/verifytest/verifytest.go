// Package verifytest gives other packages' tests keyless signatures without
// the network: a virtual Sigstore (sigstore-go's testing/ca: its own Fulcio
// CA, Rekor log and timestamp authority) that writes a trusted_root.json and
// attaches Sigstore bundles to manifests as cosign v3 does; and
// AcceptUnsigned, the verify.Verified a store test installs with. Only
// tests import it (depcheck_test.go).
package verifytest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/sigstore/sigstore-go/pkg/testing/ca"
	"oras.land/oras-go/v2"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/errdef"

	"github.com/sysext/sysext/verify"
	"github.com/sysext/sysext/verify/internal/sigstoretest"
)

// Sigstore is a virtual Sigstore for one test.
type Sigstore struct {
	vs *ca.VirtualSigstore
	// TrustedRoot is the path of its trusted_root.json (--trusted-root).
	TrustedRoot string
}

// New starts a virtual Sigstore and writes its trusted root into a temp dir.
func New(t testing.TB) *Sigstore {
	t.Helper()
	vs, err := ca.NewVirtualSigstore()
	if err != nil {
		t.Fatal(err)
	}
	return &Sigstore{vs: vs, TrustedRoot: sigstoretest.TrustedRootFile(t, vs)}
}

// Bundle returns a Sigstore bundle v0.3 signing manifest desc as cosign v3
// does (DSSE, in-toto statement, cosign's signing predicate), with a
// certificate for identity from issuer, a log entry and a timestamp.
func (s *Sigstore) Bundle(t testing.TB, desc ocispec.Descriptor, identity, issuer string) []byte {
	t.Helper()
	stmt := sigstoretest.Statement(desc.Digest, sigstoretest.CosignSignPredicate)
	return sigstoretest.Bundle(t, s.vs, stmt, identity, issuer, time.Now().Add(5*time.Minute), true)
}

// Attach signs desc keylessly as identity from issuer and pushes the bundle
// to dst as an OCI 1.1 referrer of desc (a registry without the referrers
// API gets the fallback tag from oras-go). It returns the referrer.
func (s *Sigstore) Attach(t testing.TB, dst oras.Target, desc ocispec.Descriptor, identity, issuer string) ocispec.Descriptor {
	t.Helper()
	ctx := context.Background()
	b := s.Bundle(t, desc, identity, issuer)
	layer := content.NewDescriptorFromBytes(verify.MediaTypeBundleV03, b)
	push := func(d ocispec.Descriptor, data []byte) {
		if err := dst.Push(ctx, d, bytes.NewReader(data)); err != nil && !isExists(err) {
			t.Fatal(err)
		}
	}
	push(layer, b)
	push(ocispec.DescriptorEmptyJSON, ocispec.DescriptorEmptyJSON.Data)
	subject := ocispec.Descriptor{MediaType: desc.MediaType, Digest: desc.Digest, Size: desc.Size}
	m := ocispec.Manifest{
		Versioned:    specs.Versioned{SchemaVersion: 2},
		MediaType:    ocispec.MediaTypeImageManifest,
		ArtifactType: verify.MediaTypeBundleV03,
		Config:       ocispec.DescriptorEmptyJSON,
		Layers:       []ocispec.Descriptor{layer},
		Subject:      &subject,
		Annotations:  map[string]string{"dev.sigstore.bundle.content": "dsse-envelope", "dev.sigstore.bundle.predicateType": sigstoretest.CosignSignPredicate},
	}
	mb, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	md := content.NewDescriptorFromBytes(ocispec.MediaTypeImageManifest, mb)
	push(md, mb)
	return md
}

func isExists(err error) bool {
	return err != nil && errors.Is(err, errdef.ErrAlreadyExists)
}

// AcceptUnsigned is a verify.Verified for d without a signature, made the
// way a node's --insecure-allow-unsigned makes one: a policy that accepts
// anything verifies d (nothing is fetched). It panics only if that opt-out
// stopped working.
func AcceptUnsigned(d digest.Digest) verify.Verified {
	p, err := verify.TrustOptions{AllowUnsigned: true}.Policy()
	if err != nil {
		panic(err)
	}
	v, err := p.Verify(context.Background(), nil, "example.invalid/test", ocispec.Descriptor{Digest: d})
	if err != nil {
		panic(err)
	}
	return v
}
