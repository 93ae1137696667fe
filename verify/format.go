package verify

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

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

// Keys of a payload's "optional" map that freshness is decided from. They
// are what `cosign sign -a tag=24 -a timestamp=$(date +%s)` writes;
// "timestamp" is also where containers/image's simple signing puts its
// signing time (a JSON number).
const (
	AnnotationTag       = "tag"
	AnnotationTimestamp = "timestamp"
)

// newPayload builds the payload signed for manifest d of repository ref
// (a "host/repo" without tag or digest).
func newPayload(d digest.Digest, ref string) ([]byte, error) {
	return newPayloadWith(d, ref, nil)
}

// newPayloadWith is newPayload with annotations in the "optional" map.
func newPayloadWith(d digest.Digest, ref string, optional map[string]string) ([]byte, error) {
	var p simpleSigning
	p.Critical.Identity.DockerReference = ref
	p.Critical.Image.DockerManifestDigest = d.String()
	p.Critical.Type = simpleSigningType
	if len(optional) > 0 {
		p.Optional = map[string]any{}
		for k, v := range optional {
			p.Optional[k] = v
		}
	}
	return json.Marshal(p)
}

// signedTag returns the "tag" annotation of a payload ("" when absent or
// not a string).
func (p simpleSigning) signedTag() string {
	s, _ := p.Optional[AnnotationTag].(string)
	return s
}

// signedTime returns the "timestamp" annotation of a payload: Unix seconds
// as a string (cosign -a) or a number (containers/image), or RFC 3339.
// ok is false when there is none; err when it cannot be read.
func (p simpleSigning) signedTime() (t time.Time, ok bool, err error) {
	v, present := p.Optional[AnnotationTimestamp]
	if !present {
		return time.Time{}, false, nil
	}
	switch v := v.(type) {
	case float64:
		return time.Unix(int64(v), 0), true, nil
	case string:
		if n, err := strconv.ParseInt(v, 10, 64); err == nil {
			return time.Unix(n, 0), true, nil
		}
		if t, err := time.Parse(time.RFC3339, v); err == nil {
			return t, true, nil
		}
	}
	return time.Time{}, true, fmt.Errorf("payload annotation %s=%v is neither Unix seconds nor an RFC 3339 time", AnnotationTimestamp, v)
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
