package verify

import (
	"bytes"
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/sigstore/sigstore-go/pkg/bundle"
	"github.com/sigstore/sigstore-go/pkg/root"
	"github.com/sigstore/sigstore-go/pkg/tlog"
	sgverify "github.com/sigstore/sigstore-go/pkg/verify"
	"github.com/sigstore/sigstore/pkg/cryptoutils"
	"github.com/sigstore/sigstore/pkg/signature"
)

// Identity is a keyless signer: the certificate's subject (an email or URI
// SAN) and the OIDC issuer that vouched for it, each given exactly or as a
// regular expression. An empty field with an empty regexp matches nothing
// for the subject and is refused for the issuer.
type Identity struct {
	Subject, SubjectRegexp string
	Issuer, IssuerRegexp   string
}

func (id Identity) String() string {
	s, i := id.Subject, id.Issuer
	if s == "" {
		s = "/" + id.SubjectRegexp + "/"
	}
	if i == "" {
		i = "/" + id.IssuerRegexp + "/"
	}
	return s + " from " + i
}

// Requirement says which signatures are accepted: one made by any of Keys,
// or a keyless one whose certificate chains to TrustedMaterial's
// certificate authorities and names one of Identities. Transparency-log
// entries are required and checked whenever TrustedMaterial holds a log's
// key, unless IgnoreTlog is set.
type Requirement struct {
	Keys            []crypto.PublicKey
	Identities      []Identity
	TrustedMaterial root.TrustedMaterial // nil: keys only, no log to check
	IgnoreTlog      bool
	// Repository, when set, must equal the docker-reference a cosign
	// payload names (containers' signedIdentity matchRepository).
	Repository string
	// Freshness, when set, asks the signed payload to name the tag being
	// verified and a recent signing time (docs/signatures.md).
	Freshness Freshness
	// Tag is the tag being verified ("" for a reference by digest), for
	// Freshness.RequireTag; Policy.Verify sets it.
	Tag string
}

// Freshness refuses a valid signature that is old news: one made for
// another tag (a build from another release line served under this tag),
// or made too long ago (an old signed build served again after the tag
// moved on). It is read from the annotations "tag" and "timestamp" (Unix
// seconds, as `cosign sign -a tag=24 -a timestamp=$(date +%s)` writes
// them, or RFC 3339): in a cosign payload's "optional" map, or on the
// subject of a bundle's statement (cosign v3). Without a timestamp, a
// verified transparency-log or timestamp-authority time counts.
type Freshness struct {
	// RequireTag: the payload's "tag" must equal the tag being verified.
	// A reference by digest names the manifest itself and is not checked.
	RequireTag bool
	// MaxAge, when positive: the signing time must be at most this old.
	MaxAge time.Duration
	// Now is the clock (tests); nil = time.Now.
	Now func() time.Time
}

func (f Freshness) enabled() bool { return f.RequireTag || f.MaxAge > 0 }

// check applies f to a signature's tag and signing time (zero = unknown).
func (f Freshness) check(tag string, signedAt time.Time, wantTag string) error {
	if f.RequireTag && wantTag != "" && tag != wantTag {
		if tag == "" {
			return fmt.Errorf("the signature names no tag, and the policy requires one naming %q (freshness.requireTag): sign with 'sysext sign' or 'cosign sign -a tag=%s'", wantTag, wantTag)
		}
		return fmt.Errorf("the signature was made for tag %q, not %q (freshness.requireTag): an image signed for another tag is not accepted under this one", tag, wantTag)
	}
	if f.MaxAge > 0 {
		if signedAt.IsZero() {
			return fmt.Errorf("the signature carries no signing time, and the policy accepts signatures at most %s old (freshness.maxAge): sign with 'sysext sign' or 'cosign sign -a timestamp=$(date +%%s)'", humanAge(f.MaxAge))
		}
		now := time.Now()
		if f.Now != nil {
			now = f.Now()
		}
		if age := now.Sub(signedAt); age > f.MaxAge {
			return fmt.Errorf("the signature was made %s (%s ago), the policy accepts at most %s (freshness.maxAge): an old signature served again is refused; re-sign the current build", signedAt.UTC().Format(time.RFC3339), humanAge(age), humanAge(f.MaxAge))
		}
		if signedAt.Sub(now) > maxClockSkew {
			return fmt.Errorf("the signature claims to be made %s, in the future: refused", signedAt.UTC().Format(time.RFC3339))
		}
	}
	return nil
}

// humanAge says a duration in days when it is that long, else in Go's form.
func humanAge(d time.Duration) string {
	if d >= 48*time.Hour {
		return fmt.Sprintf("%d days", int(d/(24*time.Hour)))
	}
	return d.Round(time.Second).String()
}

// maxClockSkew is how far in the future a signing time may be: clocks of
// CI machines and nodes differ.
const maxClockSkew = 10 * time.Minute

// Signature is one valid signature on a manifest.
type Signature struct {
	Digest    digest.Digest `json:"digest"`    // the manifest it covers
	Format    string        `json:"format"`    // FormatCosign or FormatBundle
	Signer    string        `json:"signer"`    // key:sha256:<hex> or "subject from issuer"
	Where     string        `json:"where"`     // tag/layer or referrer it was found at
	Tlog      bool          `json:"tlog"`      // a transparency-log entry was verified
	Reference string        `json:"reference"` // docker-reference in a cosign payload, if any
	// Tag and SignedAt are the freshness the signature claims: a cosign
	// payload's "tag" and "timestamp" annotations, or for a bundle the
	// verified log or authority time (zero when unknown).
	Tag      string    `json:"tag,omitempty"`
	SignedAt time.Time `json:"signed_at,omitzero"`
}

// Check finds the signatures attached to desc in src and returns the ones
// this requirement accepts. When none is accepted the error says why, one
// sentence per signature found (or that there is none).
func (r *Requirement) Check(ctx context.Context, src Source, desc ocispec.Descriptor) ([]Signature, error) {
	if len(r.Keys) == 0 && len(r.Identities) == 0 {
		return nil, errors.New("the requirement names no key and no keyless identity")
	}
	if len(r.Identities) > 0 && (r.TrustedMaterial == nil || len(r.TrustedMaterial.FulcioCertificateAuthorities()) == 0) {
		return nil, errors.New("keyless identities need a trusted root with certificate authorities (--trusted-root FILE)")
	}
	dv, err := discover(ctx, src, desc)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", desc.Digest, err)
	}
	var good []Signature
	problems := dv.problems
	for _, c := range dv.candidates {
		s, err := r.checkCandidate(c, desc.Digest)
		if err != nil {
			problems = append(problems, fmt.Errorf("%s: %w", c.where, err))
			continue
		}
		good = append(good, s)
	}
	if len(good) > 0 {
		return good, nil
	}
	return nil, &NoValidSignatureError{Digest: desc.Digest, Found: len(dv.candidates), Problems: problems}
}

// NoValidSignatureError says that no signature on a manifest satisfies the
// requirement, and what was wrong with each one found.
type NoValidSignatureError struct {
	Digest   digest.Digest
	Found    int
	Problems []error
}

func (e *NoValidSignatureError) Error() string {
	if e.Found == 0 && len(e.Problems) == 0 {
		return fmt.Sprintf("manifest %s is not signed: no cosign signature (tag %s) and no Sigstore bundle referrer", e.Digest, SignatureTag(e.Digest))
	}
	// A few reasons say enough; hundreds would bury the sentence.
	const shown = 5
	var msgs []string
	for i, p := range e.Problems {
		if i == shown {
			msgs = append(msgs, fmt.Sprintf("and %d more", len(e.Problems)-shown))
			break
		}
		msgs = append(msgs, p.Error())
	}
	return fmt.Sprintf("manifest %s has no valid signature (%d found): %s", e.Digest, e.Found, strings.Join(msgs, "; "))
}

// checkCandidate verifies one signature against every key and identity of r.
func (r *Requirement) checkCandidate(c candidate, d digest.Digest) (Signature, error) {
	entity, artifact, err := entityOf(c, d)
	if err != nil {
		return Signature{}, err
	}
	var errs []string
	try := func(tm root.TrustedMaterial, who string, opt sgverify.PolicyOption, keyed bool) (Signature, bool) {
		res, logChecked, err := r.verifyEntity(entity, tm, artifact(), opt, keyed)
		if err != nil {
			errs = append(errs, who+": "+err.Error())
			return Signature{}, false
		}
		if c.format == FormatBundle && (res.Statement == nil || res.Statement.GetPredicateType() != cosignSignPredicate) {
			// An attestation (SBOM, provenance) names the digest too, but
			// it is not a signature approving the image.
			errs = append(errs, fmt.Sprintf("%s: bundle is an attestation (predicate %q), not a cosign signature (%s)", who, res.Statement.GetPredicateType(), cosignSignPredicate))
			return Signature{}, false
		}
		s := Signature{Digest: d, Format: c.format, Where: c.where, Signer: who, Tlog: logChecked}
		if c.format == FormatBundle {
			// cosign v3 puts `sign -a` annotations on the statement's
			// subject: signed like the rest of it.
			s.Tag, s.SignedAt = statementFreshness(res, d)
		}
		for _, ts := range res.VerifiedTimestamps {
			// A log's or timestamp authority's time, verified: the
			// signing time when the signature names none.
			if s.SignedAt.IsZero() {
				s.SignedAt = ts.Timestamp
			}
		}
		if res.VerifiedIdentity != nil && res.Signature != nil && res.Signature.Certificate != nil {
			s.Signer = res.Signature.Certificate.SubjectAlternativeName + " from " + res.Signature.Certificate.Issuer
		}
		return s, true
	}
	var found *Signature
	for _, k := range r.Keys {
		if s, ok := try(r.keyMaterial(k), KeyFingerprint(k), sgverify.WithKey(), true); ok {
			found = &s
			break
		}
	}
	if found == nil && len(r.Identities) > 0 {
		for _, id := range r.Identities {
			ci, err := sgverify.NewShortCertificateIdentity(id.Issuer, id.IssuerRegexp, id.Subject, id.SubjectRegexp)
			if err != nil {
				return Signature{}, fmt.Errorf("identity %s: %w", id, err)
			}
			if s, ok := try(r.TrustedMaterial, "identity "+id.String(), sgverify.WithCertificateIdentity(ci), false); ok {
				found = &s
				break
			}
		}
	}
	if found == nil {
		return Signature{}, errors.New(strings.Join(errs, "; "))
	}
	if c.format == FormatCosign {
		// The signature is good; now what it says must be about d.
		if err := r.readPayload(found, c.payload, d); err != nil {
			return Signature{}, err
		}
	}
	if r.Freshness.enabled() {
		if err := r.Freshness.check(found.Tag, found.SignedAt, r.Tag); err != nil {
			return Signature{}, err
		}
	}
	return *found, nil
}

// entityOf is what sigstore-go verifies for a candidate: the signed entity
// and, fresh for each attempt (WithArtifact's reader is consumed), the
// artifact it must be about.
func entityOf(c candidate, d digest.Digest) (sgverify.SignedEntity, func() sgverify.ArtifactPolicyOption, error) {
	switch c.format {
	case FormatCosign:
		e, err := newCosignEntity(c)
		if err != nil {
			return nil, nil, err
		}
		return e, func() sgverify.ArtifactPolicyOption { return sgverify.WithArtifact(bytes.NewReader(c.payload)) }, nil
	case FormatBundle:
		var b bundle.Bundle
		if err := b.UnmarshalJSON(c.bundle); err != nil {
			return nil, nil, fmt.Errorf("not a valid Sigstore bundle: %w", err)
		}
		raw, err := hex.DecodeString(d.Encoded())
		if err != nil || d.Algorithm() != digest.SHA256 {
			return nil, nil, fmt.Errorf("manifest digest %s is not sha256", d)
		}
		return &b, func() sgverify.ArtifactPolicyOption { return sgverify.WithArtifactDigest("sha256", raw) }, nil
	}
	return nil, nil, fmt.Errorf("unknown signature format %q", c.format)
}

// readPayload checks what a verified cosign payload says: that it is about
// d and names the repository the policy asks for; it records the
// repository, the tag and the signing time it gives.
func (r *Requirement) readPayload(s *Signature, payload []byte, d digest.Digest) error {
	p, err := parsePayload(payload, d)
	if err != nil {
		return err
	}
	ref := p.Critical.Identity.DockerReference
	if r.Repository != "" && ref != r.Repository {
		return fmt.Errorf("signature names repository %q, policy requires %q", ref, r.Repository)
	}
	s.Reference = ref
	s.Tag = p.signedTag()
	at, ok, err := p.signedTime()
	if err != nil && r.Freshness.MaxAge > 0 {
		return err
	}
	if ok && err == nil {
		s.SignedAt = at
	}
	return nil
}

// statementFreshness reads the "tag" and "timestamp" annotations of the
// verified statement's subject for d (cosign v3's `sign -a`).
func statementFreshness(res *sgverify.VerificationResult, d digest.Digest) (string, time.Time) {
	if res == nil || res.Statement == nil {
		return "", time.Time{}
	}
	for _, sub := range res.Statement.GetSubject() {
		if sub.GetDigest()[string(d.Algorithm())] != d.Encoded() || sub.GetAnnotations() == nil {
			continue
		}
		p := simpleSigning{Optional: sub.GetAnnotations().AsMap()}
		at, _, err := p.signedTime()
		if err != nil {
			at = time.Time{}
		}
		return p.signedTag(), at
	}
	return "", time.Time{}
}

// keyMaterial is the trusted material for one key: the key itself, plus the
// trusted root's logs when there is one.
func (r *Requirement) keyMaterial(k crypto.PublicKey) root.TrustedMaterial {
	km := root.NewTrustedPublicKeyMaterial(func(string) (root.TimeConstrainedVerifier, error) {
		// The hint in a bundle is the signer's choice; which key is trusted
		// is ours, so it is ignored.
		v, err := signature.LoadDefaultVerifier(k)
		if err != nil {
			return nil, err
		}
		return root.NewExpiringKey(v, time.Time{}, time.Time{}), nil
	})
	if r.TrustedMaterial == nil {
		return km
	}
	return root.TrustedMaterialCollection{r.TrustedMaterial, km}
}

// verifyEntity runs sigstore-go's verifier; logChecked says whether a
// transparency-log entry was required (and so verified).
func (r *Requirement) verifyEntity(e sgverify.SignedEntity, tm root.TrustedMaterial, artifact sgverify.ArtifactPolicyOption, who sgverify.PolicyOption, keyed bool) (res *sgverify.VerificationResult, logChecked bool, err error) {
	var opts []sgverify.VerifierOption
	useLog := !r.IgnoreTlog && len(tm.RekorLogs()) > 0
	if useLog {
		opts = append(opts, sgverify.WithTransparencyLog(1))
	}
	switch {
	case keyed && !useLog:
		opts = append(opts, sgverify.WithNoObserverTimestamps())
	case useLog:
		opts = append(opts, sgverify.WithObserverTimestamps(1))
	default:
		// Keyless without a log: a timestamp authority's word if there
		// is one, else the certificate must be valid now.
		if ts, _ := e.Timestamps(); len(ts) > 0 && len(tm.TimestampingAuthorities()) > 0 {
			opts = append(opts, sgverify.WithSignedTimestamps(1))
		} else {
			opts = append(opts, sgverify.WithCurrentTime())
		}
	}
	v, err := sgverify.NewVerifier(tm, opts...)
	if err != nil {
		return nil, false, err
	}
	res, err = v.Verify(e, sgverify.NewPolicy(artifact, who))
	return res, useLog && err == nil, err
}

// cosignEntity presents a cosign signature layer to sigstore-go as a
// message signature over the payload.
type cosignEntity struct {
	sig   []byte
	dgst  []byte
	vc    sgverify.VerificationContent
	tlogs []*tlog.Entry
}

func newCosignEntity(c candidate) (*cosignEntity, error) {
	sig, err := base64.StdEncoding.DecodeString(strings.TrimSpace(c.annotations[AnnotationSignature]))
	if err != nil || len(sig) == 0 {
		return nil, fmt.Errorf("annotation %s is not base64", AnnotationSignature)
	}
	sum := sha256.Sum256(c.payload)
	e := &cosignEntity{sig: sig, dgst: sum[:], vc: keyContent{}}
	if pemCert := c.annotations[AnnotationCertificate]; pemCert != "" {
		certs, err := cryptoutils.UnmarshalCertificatesFromPEM([]byte(pemCert))
		if err != nil || len(certs) == 0 {
			return nil, fmt.Errorf("annotation %s is not a PEM certificate", AnnotationCertificate)
		}
		e.vc = bundle.NewCertificate(certs[0])
	}
	if rb := c.annotations[AnnotationRekorBundle]; rb != "" {
		entry, err := parseRekorBundle(rb)
		if err != nil {
			return nil, fmt.Errorf("annotation %s: %w", AnnotationRekorBundle, err)
		}
		e.tlogs = []*tlog.Entry{entry}
	}
	return e, nil
}

// parseRekorBundle reads cosign's dev.sigstore.cosign/bundle annotation: a
// Rekor entry with its signed entry timestamp.
func parseRekorBundle(s string) (*tlog.Entry, error) {
	var rb struct {
		SignedEntryTimestamp []byte
		Payload              struct {
			Body           string `json:"body"`
			IntegratedTime int64  `json:"integratedTime"`
			LogIndex       int64  `json:"logIndex"`
			LogID          string `json:"logID"`
		}
	}
	if err := json.Unmarshal([]byte(s), &rb); err != nil {
		return nil, fmt.Errorf("not JSON: %w", err)
	}
	body, err := base64.StdEncoding.DecodeString(rb.Payload.Body)
	if err != nil {
		return nil, fmt.Errorf("body is not base64: %w", err)
	}
	logID, err := hex.DecodeString(rb.Payload.LogID)
	if err != nil {
		return nil, fmt.Errorf("logID is not hex: %w", err)
	}
	return tlog.NewEntry(body, rb.Payload.IntegratedTime, rb.Payload.LogIndex, logID, rb.SignedEntryTimestamp, nil) //nolint:staticcheck // the annotation carries a Rekor v1 entry
}

func (e *cosignEntity) HasInclusionPromise() bool {
	for _, t := range e.tlogs {
		if t.HasInclusionPromise() {
			return true
		}
	}
	return false
}

func (e *cosignEntity) HasInclusionProof() bool {
	for _, t := range e.tlogs {
		if t.HasInclusionProof() {
			return true
		}
	}
	return false
}

func (e *cosignEntity) VerificationContent() (sgverify.VerificationContent, error) { return e.vc, nil }

func (e *cosignEntity) SignatureContent() (sgverify.SignatureContent, error) {
	return bundle.NewMessageSignature(e.dgst, "SHA2_256", e.sig), nil
}

func (e *cosignEntity) Timestamps() ([][]byte, error)       { return nil, nil }
func (e *cosignEntity) TlogEntries() ([]*tlog.Entry, error) { return e.tlogs, nil }
func (e *cosignEntity) Version() (string, error)            { return "v0.1", nil }

// keyContent is the verification content of a signature made with a key:
// the trusted material decides which key that is.
type keyContent struct{}

func (keyContent) CompareKey(key any, tm root.TrustedMaterial) bool {
	v, err := tm.PublicKeyVerifier("")
	if err != nil {
		return false
	}
	pub, err := v.PublicKey()
	if err != nil {
		return false
	}
	eq, ok := key.(interface{ Equal(crypto.PublicKey) bool })
	return ok && eq.Equal(pub)
}

func (keyContent) ValidAtTime(t time.Time, tm root.TrustedMaterial) bool {
	v, err := tm.PublicKeyVerifier("")
	return err == nil && v.ValidAtTime(t)
}

func (keyContent) Certificate() *x509.Certificate          { return nil }
func (keyContent) Intermediates() []*x509.Certificate      { return nil }
func (k keyContent) PublicKey() sgverify.PublicKeyProvider { return k }
func (keyContent) Hint() string                            { return "" }
