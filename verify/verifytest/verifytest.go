// Package verifytest gives other packages' tests keyless signatures without
// the network: a virtual Sigstore (sigstore-go's testing/ca: its own Fulcio
// CA, Rekor log and timestamp authority) that writes a trusted_root.json and
// attaches Sigstore bundles to manifests as cosign v3 does.
package verifytest

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	protobundle "github.com/sigstore/protobuf-specs/gen/pb-go/bundle/v1"
	protocommon "github.com/sigstore/protobuf-specs/gen/pb-go/common/v1"
	protodsse "github.com/sigstore/protobuf-specs/gen/pb-go/dsse"
	protorekor "github.com/sigstore/protobuf-specs/gen/pb-go/rekor/v1"
	"github.com/sigstore/sigstore-go/pkg/root"
	"github.com/sigstore/sigstore-go/pkg/testing/ca"
	"github.com/sigstore/sigstore-go/pkg/tlog"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"oras.land/oras-go/v2"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/errdef"

	"github.com/sysext/sysext/verify"
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
	logs := map[string]*root.TransparencyLog{}
	for id, l := range vs.RekorLogs() {
		c := *l
		raw, err := hex.DecodeString(id)
		if err != nil {
			t.Fatal(err)
		}
		c.ID = raw // the virtual Sigstore keeps the hex string; the file holds raw bytes
		logs[id] = &c
	}
	tr, err := root.NewTrustedRoot(root.TrustedRootMediaType01, vs.FulcioCertificateAuthorities(), map[string]*root.TransparencyLog{}, vs.TimestampingAuthorities(), logs)
	if err != nil {
		t.Fatal(err)
	}
	b, err := tr.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "trusted_root.json")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return &Sigstore{vs: vs, TrustedRoot: p}
}

// Bundle returns a Sigstore bundle v0.3 signing manifest desc as cosign v3
// does (DSSE, in-toto statement, cosign's signing predicate), with a
// certificate for identity from issuer, a log entry and a timestamp.
func (s *Sigstore) Bundle(t testing.TB, desc ocispec.Descriptor, identity, issuer string) []byte {
	t.Helper()
	stmt := fmt.Sprintf(`{"_type":"https://in-toto.io/Statement/v1","subject":[{"digest":{"sha256":%q}}],"predicateType":"https://sigstore.dev/cosign/sign/v1","predicate":{}}`, desc.Digest.Encoded())
	ent, err := s.vs.AttestAtTime(identity, issuer, []byte(stmt), time.Now().Add(5*time.Minute), true)
	if err != nil {
		t.Fatal(err)
	}
	vc, _ := ent.VerificationContent()
	sc, _ := ent.SignatureContent()
	env := sc.EnvelopeContent().RawEnvelope()
	entries, _ := ent.TlogEntries()
	tle := proto.Clone(entries[0].TransparencyLogEntry()).(*protorekor.TransparencyLogEntry)
	tle.KindVersion = &protorekor.KindVersion{Kind: "dsse", Version: "0.0.1"}
	set, err := s.vs.RekorSignPayload(tlog.RekorPayload{
		Body:           base64.StdEncoding.EncodeToString(tle.CanonicalizedBody),
		IntegratedTime: tle.IntegratedTime,
		LogIndex:       tle.LogIndex,
		LogID:          hex.EncodeToString(tle.LogId.KeyId),
	})
	if err != nil {
		t.Fatal(err)
	}
	tle.InclusionPromise = &protorekor.InclusionPromise{SignedEntryTimestamp: set}
	sigs := make([]*protodsse.Signature, len(env.Signatures))
	for i, sg := range env.Signatures {
		raw, _ := base64.StdEncoding.DecodeString(sg.Sig)
		sigs[i] = &protodsse.Signature{Sig: raw, Keyid: sg.KeyID}
	}
	payload, _ := base64.StdEncoding.DecodeString(env.Payload)
	ts, _ := ent.Timestamps()
	var rfc []*protocommon.RFC3161SignedTimestamp
	for _, x := range ts {
		rfc = append(rfc, &protocommon.RFC3161SignedTimestamp{SignedTimestamp: x})
	}
	pb := &protobundle.Bundle{
		MediaType: verify.MediaTypeBundleV03,
		VerificationMaterial: &protobundle.VerificationMaterial{
			Content:                   &protobundle.VerificationMaterial_Certificate{Certificate: &protocommon.X509Certificate{RawBytes: vc.Certificate().Raw}},
			TlogEntries:               []*protorekor.TransparencyLogEntry{tle},
			TimestampVerificationData: &protobundle.TimestampVerificationData{Rfc3161Timestamps: rfc},
		},
		Content: &protobundle.Bundle_DsseEnvelope{DsseEnvelope: &protodsse.Envelope{Payload: payload, PayloadType: env.PayloadType, Signatures: sigs}},
	}
	b, err := protojson.Marshal(pb)
	if err != nil {
		t.Fatal(err)
	}
	return b
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
		Annotations:  map[string]string{"dev.sigstore.bundle.content": "dsse-envelope", "dev.sigstore.bundle.predicateType": "https://sigstore.dev/cosign/sign/v1"},
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
