package verify

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/opencontainers/go-digest"
)

// cosign's signature manifest (the "simple signing" format of cosign v2,
// which cosign v3 still verifies): a manifest tagged sha256-<hex>.sig whose
// layers are signed payloads, each with its signature in an annotation.
const (
	MediaTypeSimpleSigning = "application/vnd.dev.cosign.simplesigning.v1+json"
	AnnotationSignature    = "dev.cosignproject.cosign/signature"
	AnnotationCertificate  = "dev.sigstore.cosign/certificate"
	AnnotationChain        = "dev.sigstore.cosign/chain"
	AnnotationRekorBundle  = "dev.sigstore.cosign/bundle"

	// simpleSigningType is the critical.type cosign writes and requires.
	simpleSigningType = "cosign container image signature"
)

// Sigstore bundles as cosign v3 attaches them: an OCI 1.1 referrer manifest
// whose artifactType and only layer are the bundle media type.
const (
	MediaTypeBundleV03 = "application/vnd.dev.sigstore.bundle.v0.3+json"
	// cosignSignPredicate is the in-toto predicate type of `cosign sign`.
	cosignSignPredicate = "https://sigstore.dev/cosign/sign/v1"
)

// Limits on untrusted signature data: manifests, payloads and bundles are
// small; anything larger is refused before it is read.
const (
	maxManifestSize  = 4 << 20
	maxPayloadSize   = 1 << 20
	maxBundleSize    = 4 << 20
	maxSignatureSigs = 256 // layers in one .sig manifest / referrers per image
)

// SignatureTag is the tag cosign stores the signature manifest of d under.
func SignatureTag(d digest.Digest) string {
	return strings.Replace(d.String(), ":", "-", 1) + ".sig"
}

// fallbackTag is the OCI referrers tag schema's tag for d.
func fallbackTag(d digest.Digest) string {
	return strings.Replace(d.String(), ":", "-", 1)
}

// simpleSigning is cosign's payload: what the signature covers.
type simpleSigning struct {
	Critical struct {
		Identity struct {
			DockerReference string `json:"docker-reference"`
		} `json:"identity"`
		Image struct {
			DockerManifestDigest string `json:"docker-manifest-digest"`
		} `json:"image"`
		Type string `json:"type"`
	} `json:"critical"`
	Optional map[string]any `json:"optional"`
}

// newPayload builds the payload signed for manifest d of repository ref
// (a "host/repo" without tag or digest).
func newPayload(d digest.Digest, ref string) ([]byte, error) {
	var p simpleSigning
	p.Critical.Identity.DockerReference = ref
	p.Critical.Image.DockerManifestDigest = d.String()
	p.Critical.Type = simpleSigningType
	return json.Marshal(p)
}

// parsePayload reads a signed payload and checks that it names d.
func parsePayload(b []byte, d digest.Digest) (simpleSigning, error) {
	var p simpleSigning
	if err := json.Unmarshal(b, &p); err != nil {
		return p, fmt.Errorf("signed payload is not simple signing JSON: %w", err)
	}
	if p.Critical.Type != simpleSigningType {
		return p, fmt.Errorf("signed payload has type %q, want %q", p.Critical.Type, simpleSigningType)
	}
	if got := p.Critical.Image.DockerManifestDigest; got != d.String() {
		return p, fmt.Errorf("signature is for manifest %s, not %s", got, d)
	}
	return p, nil
}
