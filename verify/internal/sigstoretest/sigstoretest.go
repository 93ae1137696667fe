// Package sigstoretest turns sigstore-go's virtual Sigstore (testing/ca) into
// the files a node is given: a trusted_root.json and Sigstore bundles v0.3
// as cosign v3 writes them. It is shared by verify's own tests and by
// verify/verifytest, and imports nothing of verify (no import cycle).
package sigstoretest

import (
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	protobundle "github.com/sigstore/protobuf-specs/gen/pb-go/bundle/v1"
	protocommon "github.com/sigstore/protobuf-specs/gen/pb-go/common/v1"
	protodsse "github.com/sigstore/protobuf-specs/gen/pb-go/dsse"
	protorekor "github.com/sigstore/protobuf-specs/gen/pb-go/rekor/v1"
	"github.com/sigstore/sigstore-go/pkg/root"
	"github.com/sigstore/sigstore-go/pkg/testing/ca"
	"github.com/sigstore/sigstore-go/pkg/tlog"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// CosignSignPredicate is the in-toto predicate type of `cosign sign`.
const CosignSignPredicate = "https://sigstore.dev/cosign/sign/v1"

// BundleMediaType is the media type of the bundles made here.
const BundleMediaType = "application/vnd.dev.sigstore.bundle.v0.3+json"

// TrustedRootFile writes vs's trusted root as trusted_root.json in a temp
// dir and returns its path.
func TrustedRootFile(t testing.TB, vs *ca.VirtualSigstore) string {
	t.Helper()
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
	return p
}

// Statement is the in-toto statement a cosign v3 signature over manifest d
// carries, with the given predicate type.
func Statement(d digest.Digest, predicate string) []byte {
	return []byte(fmt.Sprintf(`{"_type":"https://in-toto.io/Statement/v1","subject":[{"digest":{"sha256":%q}}],"predicateType":%q,"predicate":{}}`, d.Encoded(), predicate))
}

// Bundle makes a Sigstore bundle v0.3 (DSSE over stmt) signed by a
// certificate for identity from issuer, with a log entry (inclusion proof
// and signed entry timestamp) at integratedTime, and with withTSA a
// timestamp authority's timestamp.
func Bundle(t testing.TB, vs *ca.VirtualSigstore, stmt []byte, identity, issuer string, integratedTime time.Time, withTSA bool) []byte {
	t.Helper()
	ent, err := vs.AttestAtTime(identity, issuer, stmt, integratedTime, true)
	if err != nil {
		t.Fatal(err)
	}
	vc, _ := ent.VerificationContent()
	sc, _ := ent.SignatureContent()
	env := sc.EnvelopeContent().RawEnvelope()
	entries, _ := ent.TlogEntries()
	tle := proto.Clone(entries[0].TransparencyLogEntry()).(*protorekor.TransparencyLogEntry)
	tle.KindVersion = &protorekor.KindVersion{Kind: "dsse", Version: "0.0.1"}
	set, err := vs.RekorSignPayload(tlog.RekorPayload{
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
	for i, s := range env.Signatures {
		raw, _ := base64.StdEncoding.DecodeString(s.Sig)
		sigs[i] = &protodsse.Signature{Sig: raw, Keyid: s.KeyID}
	}
	payload, _ := base64.StdEncoding.DecodeString(env.Payload)
	pb := &protobundle.Bundle{
		MediaType: BundleMediaType,
		VerificationMaterial: &protobundle.VerificationMaterial{
			Content:     &protobundle.VerificationMaterial_Certificate{Certificate: &protocommon.X509Certificate{RawBytes: vc.Certificate().Raw}},
			TlogEntries: []*protorekor.TransparencyLogEntry{tle},
		},
		Content: &protobundle.Bundle_DsseEnvelope{DsseEnvelope: &protodsse.Envelope{Payload: payload, PayloadType: env.PayloadType, Signatures: sigs}},
	}
	if withTSA {
		ts, _ := ent.Timestamps()
		var rfc []*protocommon.RFC3161SignedTimestamp
		for _, x := range ts {
			rfc = append(rfc, &protocommon.RFC3161SignedTimestamp{SignedTimestamp: x})
		}
		pb.VerificationMaterial.TimestampVerificationData = &protobundle.TimestampVerificationData{Rfc3161Timestamps: rfc}
	}
	b, err := protojson.Marshal(pb)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
