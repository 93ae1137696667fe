package verify

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/secure-systems-lab/go-securesystemslib/encrypted"
	"github.com/sigstore/sigstore/pkg/cryptoutils"
	"github.com/sigstore/sigstore/pkg/signature"
)

// PEM block types of cosign's encrypted private key file. cosign writes the
// SIGSTORE one since v2 and still reads the older COSIGN one.
const (
	pemTypeSigstore = "ENCRYPTED SIGSTORE PRIVATE KEY"
	pemTypeCosign   = "ENCRYPTED COSIGN PRIVATE KEY"
)

// ErrWrongPassword means the private key file could not be decrypted: the
// password is wrong (or the file is damaged).
var ErrWrongPassword = errors.New("wrong password for the private key (set COSIGN_PASSWORD to the password the key was made with)")

// GenerateKeyPair makes an ECDSA P-256 key pair, as cosign does, and returns
// the private key in cosign's encrypted PEM format (scrypt + secretbox over
// PKCS#8) and the public key as a PKIX PEM block.
func GenerateKeyPair(password []byte) (privatePEM, publicPEM []byte, err error) {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generate key: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, nil, fmt.Errorf("encode private key: %w", err)
	}
	if password == nil {
		password = []byte{}
	}
	enc, err := encrypted.Encrypt(der, password)
	if err != nil {
		return nil, nil, fmt.Errorf("encrypt private key: %w", err)
	}
	privatePEM = pem.EncodeToMemory(&pem.Block{Type: pemTypeSigstore, Bytes: enc})
	publicPEM, err = cryptoutils.MarshalPublicKeyToPEM(priv.Public())
	if err != nil {
		return nil, nil, fmt.Errorf("encode public key: %w", err)
	}
	return privatePEM, publicPEM, nil
}

// Signer signs signature payloads with a private key.
type Signer struct {
	sv  signature.SignerVerifier
	pub crypto.PublicKey
	// annotations go into each payload's "optional" map, as cosign's
	// `sign -a key=value` puts them (see WithFreshness).
	annotations map[string]string
}

// Annotate returns a signer that also writes a into the "optional" map of
// every payload it signs, as `cosign sign -a KEY=VALUE` does.
func (s *Signer) Annotate(a map[string]string) *Signer {
	c := *s
	c.annotations = map[string]string{}
	for k, v := range s.annotations {
		c.annotations[k] = v
	}
	for k, v := range a {
		c.annotations[k] = v
	}
	return &c
}

// WithFreshness returns a signer whose payloads name the tag being signed
// and the signing time (the "tag" and "timestamp" annotations, Unix
// seconds), so a policy can refuse an old signature served again
// (Freshness). An empty tag (signing by digest) is left out.
func (s *Signer) WithFreshness(tag string, now time.Time) *Signer {
	a := map[string]string{AnnotationTimestamp: strconv.FormatInt(now.Unix(), 10)}
	if tag != "" {
		a[AnnotationTag] = tag
	}
	return s.Annotate(a)
}

// LoadPrivateKey decrypts a cosign private key file's content with password.
// A wrong password returns an error wrapping ErrWrongPassword.
func LoadPrivateKey(pemBytes, password []byte) (*Signer, error) {
	block, _ := pem.Decode(pemBytes)
	if block == nil {
		return nil, errors.New("not a PEM file (want a cosign private key, as made by 'sysext generate-key-pair')")
	}
	if block.Type != pemTypeSigstore && block.Type != pemTypeCosign {
		return nil, fmt.Errorf("PEM block %q is not a cosign encrypted private key (want %q)", block.Type, pemTypeSigstore)
	}
	if password == nil {
		password = []byte{}
	}
	der, err := encrypted.Decrypt(block.Bytes, password)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrWrongPassword, err)
	}
	key, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, fmt.Errorf("parse decrypted private key: %w", err)
	}
	cs, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("private key of type %T cannot sign", key)
	}
	return NewSigner(cs)
}

// NewSigner signs with a private key held in memory (*ecdsa.PrivateKey,
// ed25519.PrivateKey or *rsa.PrivateKey).
func NewSigner(cs crypto.Signer) (*Signer, error) {
	sv, err := signature.LoadDefaultSignerVerifier(cs)
	if err != nil {
		return nil, fmt.Errorf("load private key: %w", err)
	}
	return &Signer{sv: sv, pub: cs.Public()}, nil
}

// PublicKey returns the signer's public key.
func (s *Signer) PublicKey() crypto.PublicKey { return s.pub }

// Fingerprint names the signer's key the way Verified.Signer does.
func (s *Signer) Fingerprint() string { return KeyFingerprint(s.pub) }

// LoadPublicKey parses a PEM public key (cosign.pub).
func LoadPublicKey(pemBytes []byte) (crypto.PublicKey, error) {
	pub, err := cryptoutils.UnmarshalPEMToPublicKey(pemBytes)
	if err != nil {
		return nil, fmt.Errorf("not a PEM public key (want a cosign.pub): %w", err)
	}
	return pub, nil
}

// KeyFingerprint names a public key by the SHA-256 of its PKIX encoding, in
// the "key:sha256:<hex>" form; it is what Verified.Signer records for a key.
func KeyFingerprint(pub crypto.PublicKey) string {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "unknown key"
	}
	sum := sha256.Sum256(der)
	return "key:sha256:" + hex.EncodeToString(sum[:])
}
