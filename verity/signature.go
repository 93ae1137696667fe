package verity

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/digitorus/pkcs7"
)

// MaxSignaturePartition bounds the signature partition systemd reads
// (4 MiB in dissect-image.c); ours are one 4 KiB block.
const MaxSignaturePartition = 4 << 20

// maxPKCS7 bounds the decoded signature.
const maxPKCS7 = 64 << 10

// Errors that name which link of the chain broke.
var (
	// ErrRootHashMismatch: the signature partition signs another root hash
	// than the image's tree has.
	ErrRootHashMismatch = errors.New("the signature partition's rootHash is not the root hash of the image's hash tree")
	// ErrUntrustedSigner: no trusted certificate matches the signer.
	ErrUntrustedSigner = errors.New("the verity signature was not made by a trusted certificate")
	// ErrBadSignature: the signer is trusted but the signature does not
	// verify over the root hash.
	ErrBadSignature = errors.New("the verity signature does not verify over the root hash")
)

// Signature is the content of a root-verity-sig partition, systemd's JSON
// object (field order as systemd-repart writes it).
type Signature struct {
	RootHash               string `json:"rootHash"`
	CertificateFingerprint string `json:"certificateFingerprint,omitempty"`
	PKCS7                  []byte `json:"signature"` // DER; base64 in the JSON
}

// ParseSignaturePartition parses a signature partition's content: one
// JSON object, then zero padding. The fields are checked for form (hex root
// hash, hex fingerprint, a PKCS#7 SignedData), not for trust.
func ParseSignaturePartition(b []byte) (*Signature, error) {
	if len(b) > MaxSignaturePartition {
		return nil, fmt.Errorf("signature partition of %d bytes: more than systemd reads (%d)", len(b), MaxSignaturePartition)
	}
	if i := bytes.IndexByte(b, 0); i >= 0 {
		if bytes.ContainsFunc(b[i:], func(r rune) bool { return r != 0 }) {
			return nil, errors.New("signature partition: data after the JSON object's zero padding")
		}
		b = b[:i]
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	var s Signature
	if err := dec.Decode(&s); err != nil {
		return nil, fmt.Errorf("signature partition: not systemd's JSON object: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("signature partition: data after the JSON object")
	}
	rh, err := hex.DecodeString(s.RootHash)
	if err != nil || len(rh) < 20 || len(rh) > 64 {
		return nil, fmt.Errorf("signature partition: rootHash %.80q is not a hex hash", s.RootHash)
	}
	if s.CertificateFingerprint != "" && !ValidFingerprint(s.CertificateFingerprint) {
		return nil, fmt.Errorf("signature partition: certificateFingerprint %.80q is not a SHA-256 in lowercase hex", s.CertificateFingerprint)
	}
	if len(s.PKCS7) == 0 || len(s.PKCS7) > maxPKCS7 {
		return nil, fmt.Errorf("signature partition: a signature of %d bytes (want 1 to %d)", len(s.PKCS7), maxPKCS7)
	}
	if _, err := s.parse(); err != nil {
		return nil, err
	}
	return &s, nil
}

// Marshal returns the partition content: the JSON object padded with
// zeros to a multiple of 4096 bytes.
func (s *Signature) Marshal() ([]byte, error) {
	b, err := json.Marshal(s)
	if err != nil {
		return nil, err
	}
	n := (len(b) + 4095) / 4096 * 4096
	return append(b, make([]byte, n-len(b))...), nil
}

func (s *Signature) parse() (*pkcs7.PKCS7, error) {
	var p7 *pkcs7.PKCS7
	err := guard(func() error {
		var err error
		p7, err = pkcs7.Parse(s.PKCS7)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("signature partition: the signature is not PKCS#7 SignedData: %w", err)
	}
	if len(p7.Signers) != 1 {
		return nil, fmt.Errorf("signature partition: the PKCS#7 signature has %d signers, want 1", len(p7.Signers))
	}
	return p7, nil
}

// EmbeddedSigner returns the certificate the signature carries for its
// signer (systemd-repart embeds it; the kernel and systemd ignore it and
// look the signer up among the certificates they trust). Nil when the
// signature carries none.
func (s *Signature) EmbeddedSigner() *x509.Certificate {
	p7, err := s.parse()
	if err != nil {
		return nil
	}
	var c *x509.Certificate
	_ = guard(func() error { c = p7.GetOnlySigner(); return nil })
	return c
}

// Check verifies the signature the way systemd's userspace check does
// (PKCS7_verify with PKCS7_NOINTERN|PKCS7_NOVERIFY): the signer must be one
// of trusted (found by issuer and serial number, never taken from the
// signature itself), the signature must verify over the lowercase hex of
// rootHash, and rootHash must be the one the JSON names. It returns the
// trusted certificate that signed. Errors wrap ErrRootHashMismatch,
// ErrUntrustedSigner or ErrBadSignature.
func (s *Signature) Check(rootHash []byte, trusted []*x509.Certificate) (*x509.Certificate, error) {
	hexRoot := hex.EncodeToString(rootHash)
	if s.RootHash != hexRoot {
		return nil, fmt.Errorf("%w (it signs %s, the tree's is %s)", ErrRootHashMismatch, s.RootHash, hexRoot)
	}
	p7, err := s.parse()
	if err != nil {
		return nil, err
	}
	signer := p7.Signers[0]
	var match *x509.Certificate
	for _, c := range trusted {
		if bytes.Equal(c.RawIssuer, signer.IssuerAndSerialNumber.IssuerName.FullBytes) && c.SerialNumber.Cmp(signer.IssuerAndSerialNumber.SerialNumber) == 0 {
			match = c
			break
		}
	}
	if match == nil {
		who := "an unknown certificate"
		if c := s.EmbeddedSigner(); c != nil {
			who = fmt.Sprintf("%s (SHA-256 %s)", c.Subject, Fingerprint(c))
		}
		return nil, fmt.Errorf("%w: it was signed by %s", ErrUntrustedSigner, who)
	}
	if s.CertificateFingerprint != "" && s.CertificateFingerprint != Fingerprint(match) {
		return nil, fmt.Errorf("%w: the signer is %s but certificateFingerprint names %s", ErrBadSignature, Fingerprint(match), s.CertificateFingerprint)
	}
	// NOINTERN: the signer's key comes from the trusted certificate only.
	p7.Certificates = []*x509.Certificate{match}
	p7.Content = []byte(hexRoot)
	err = guard(p7.Verify)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadSignature, err)
	}
	return match, nil
}

// Sign makes the signature partition content for rootHash: a detached
// PKCS#7 SignedData over its lowercase hex, SHA-256, without signed
// attributes (as systemd-repart and `openssl smime -sign -noattr` make
// it), carrying cert. With an RSA key the same inputs give the same bytes.
func Sign(rootHash []byte, cert *x509.Certificate, key crypto.Signer) (*Signature, error) {
	if !KeyMatches(cert, key) {
		return nil, errors.New("the private key does not belong to the certificate (--sign-key and --certificate must be one pair)")
	}
	hexRoot := hex.EncodeToString(rootHash)
	sd, err := pkcs7.NewSignedData([]byte(hexRoot))
	if err != nil {
		return nil, err
	}
	sd.SetDigestAlgorithm(pkcs7.OIDDigestAlgorithmSHA256)
	switch key.Public().(type) {
	case *rsa.PublicKey:
		// rsaEncryption, as OpenSSL writes it and every kernel reads it.
		sd.SetEncryptionAlgorithm(pkcs7.OIDEncryptionAlgorithmRSA)
	case *ecdsa.PublicKey:
		sd.SetEncryptionAlgorithm(pkcs7.OIDDigestAlgorithmECDSASHA256)
	}
	if err := sd.SignWithoutAttr(cert, key, pkcs7.SignerInfoConfig{}); err != nil {
		return nil, fmt.Errorf("sign the root hash: %w", err)
	}
	sd.Detach()
	der, err := sd.Finish()
	if err != nil {
		return nil, fmt.Errorf("sign the root hash: %w", err)
	}
	return &Signature{RootHash: hexRoot, CertificateFingerprint: Fingerprint(cert), PKCS7: der}, nil
}

// guard turns a panic of the PKCS#7 parser on hostile input into an error.
func guard(fn func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("corrupt PKCS#7 signature: the parser failed: %v", r)
		}
	}()
	return fn()
}
