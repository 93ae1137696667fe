package verify

import (
	"fmt"

	"github.com/opencontainers/go-digest"
)

// Verified records that one manifest digest passed the trust policy, and by
// whose signature. Its fields are unexported so only this package can make
// one, and only a Policy's Verify and VerifyEntry do (depcheck_test.go
// keeps it so): the store requires it to install an image, so an
// unverified install cannot be written by mistake. An unsigned one comes
// only from a policy that accepts anything (the --insecure-allow-unsigned
// opt-out, insecureAcceptAnything); tests get one from
// verifytest.AcceptUnsigned, which goes that way too.
type Verified struct {
	digest   digest.Digest
	signer   string // key fingerprint or certificate identity; "" when unsigned
	unsigned bool   // the explicit --insecure-allow-unsigned / insecureAcceptAnything opt-out
	// signatures are the valid signatures the decision rests on.
	signatures []Signature
	// verity is what the scope requires of the image itself (veritySigned).
	verity verityRequirement
}

// Signatures lists the valid signatures the decision rests on (none when
// the image was accepted unsigned).
func (v Verified) Signatures() []Signature { return append([]Signature(nil), v.signatures...) }

// Digest is the manifest digest that was verified.
func (v Verified) Digest() digest.Digest { return v.digest }

// Signer says who signed, or "" when the opt-out allowed an unsigned image.
func (v Verified) Signer() string { return v.signer }

// Unsigned reports whether the image was accepted without a signature.
func (v Verified) Unsigned() bool { return v.unsigned }

// Check returns an error unless d is the digest that was verified.
func (v Verified) Check(d digest.Digest) error {
	if v.digest == "" {
		return fmt.Errorf("manifest %s was never verified", d)
	}
	if v.digest != d {
		return fmt.Errorf("manifest %s is not the one verified (%s): refusing to install", d, v.digest)
	}
	return nil
}

// acceptUnsigned is the explicit opt-out: it records that d is accepted
// without a signature because the user or the policy said so.
func acceptUnsigned(d digest.Digest) Verified {
	return Verified{digest: d, unsigned: true}
}
