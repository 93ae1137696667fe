package verity

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"time"
)

// CertInfo is what a person checks about a verity signing certificate.
type CertInfo struct {
	Subject     string    `json:"subject"`
	Issuer      string    `json:"issuer,omitempty"`
	Fingerprint string    `json:"fingerprint"` // SHA-256 of the DER certificate, lowercase hex
	NotBefore   time.Time `json:"notBefore"`
	NotAfter    time.Time `json:"notAfter"`
}

// Fingerprint is the SHA-256 of a certificate's DER bytes in lowercase hex,
// as systemd-repart writes it in certificateFingerprint.
func Fingerprint(c *x509.Certificate) string {
	s := sha256.Sum256(c.Raw)
	return hex.EncodeToString(s[:])
}

// Info describes c.
func Info(c *x509.Certificate) CertInfo {
	return CertInfo{
		Subject:     c.Subject.String(),
		Issuer:      c.Issuer.String(),
		Fingerprint: Fingerprint(c),
		NotBefore:   c.NotBefore.UTC(),
		NotAfter:    c.NotAfter.UTC(),
	}
}

// ValidAt says whether t falls in the certificate's validity period.
// Neither the kernel nor systemd checks it for verity signatures; it is
// shown so a person sees an expired signer.
func (i CertInfo) ValidAt(t time.Time) bool { return !t.Before(i.NotBefore) && !t.After(i.NotAfter) }

// ValidFingerprint reports whether s is a SHA-256 fingerprint in our form.
func ValidFingerprint(s string) bool {
	if len(s) != 2*sha256.Size || strings.ToLower(s) != s {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil
}

// maxPEM bounds a certificate or key file.
const maxPEM = 1 << 20

// ParseCertificates reads the PEM certificates in b (at least one).
// Other PEM blocks are an error, so a key file given as a certificate is
// noticed.
func ParseCertificates(b []byte) ([]*x509.Certificate, error) {
	if len(b) > maxPEM {
		return nil, fmt.Errorf("certificate file of %d bytes: more than %d", len(b), maxPEM)
	}
	var out []*x509.Certificate
	for {
		var block *pem.Block
		block, b = pem.Decode(b)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("PEM block %q is not a CERTIFICATE: give the X.509 certificate (PEM)", block.Type)
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("X.509 certificate: %w", err)
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, errors.New("no PEM certificate (want -----BEGIN CERTIFICATE-----, as 'sysext generate-key-pair --x509' writes)")
	}
	return out, nil
}

// ParsePrivateKey reads an unencrypted PEM private key (PKCS#8, PKCS#1 RSA
// or SEC 1 EC), the form systemd-repart's --private-key and openssl
// take.
func ParsePrivateKey(b []byte) (crypto.Signer, error) {
	if len(b) > maxPEM {
		return nil, fmt.Errorf("key file of %d bytes: more than %d", len(b), maxPEM)
	}
	for {
		var block *pem.Block
		block, b = pem.Decode(b)
		if block == nil {
			return nil, errors.New("no PEM private key (want -----BEGIN PRIVATE KEY-----, as 'sysext generate-key-pair --x509' writes)")
		}
		var key any
		var err error
		switch block.Type {
		case "PRIVATE KEY":
			key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
		case "RSA PRIVATE KEY":
			key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
		case "EC PRIVATE KEY":
			key, err = x509.ParseECPrivateKey(block.Bytes)
		case "ENCRYPTED PRIVATE KEY", "ENCRYPTED SIGSTORE PRIVATE KEY", "ENCRYPTED COSIGN PRIVATE KEY":
			return nil, fmt.Errorf("PEM block %q is encrypted: the verity signing key is an unencrypted PEM key, as systemd-repart takes it (a cosign key signs the manifest, not the image)", block.Type)
		default:
			continue // e.g. EC PARAMETERS before the key
		}
		if err != nil {
			return nil, fmt.Errorf("private key: %w", err)
		}
		s, ok := key.(crypto.Signer)
		if !ok {
			return nil, fmt.Errorf("private key of type %T cannot sign", key)
		}
		switch s.Public().(type) {
		case *rsa.PublicKey, *ecdsa.PublicKey:
			return s, nil
		case ed25519.PublicKey:
			return nil, errors.New("an Ed25519 key: the kernel's dm-verity signature check takes RSA or ECDSA keys")
		}
		return nil, fmt.Errorf("private key of type %T: use RSA or ECDSA", s.Public())
	}
}

// KeyMatches reports whether key is the private half of cert's public key.
func KeyMatches(cert *x509.Certificate, key crypto.Signer) bool {
	type equaler interface{ Equal(crypto.PublicKey) bool }
	pub, ok := key.Public().(equaler)
	return ok && pub.Equal(cert.PublicKey)
}

// DefaultValidity is how long a generated certificate is valid.
const DefaultValidity = 10 * 365 * 24 * time.Hour

// GenerateCertificate makes an RSA 3072 key and a self-signed X.509
// certificate for it, valid from now for validity, with subject
// "CN=<commonName>", and returns both as PEM (the key unencrypted PKCS#8).
// RSA because every kernel that checks dm-verity signatures reads it.
func GenerateCertificate(commonName string, validity time.Duration, now time.Time) (keyPEM, certPEM []byte, err error) {
	if commonName == "" || len(commonName) > 64 {
		return nil, nil, errors.New("the certificate's common name must be 1 to 64 characters")
	}
	if validity <= 0 {
		validity = DefaultValidity
	}
	key, err := rsa.GenerateKey(rand.Reader, 3072)
	if err != nil {
		return nil, nil, fmt.Errorf("generate key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: commonName},
		NotBefore:             now.Add(-time.Minute).UTC(),
		NotAfter:              now.Add(validity).UTC(),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true, // self-signed: its own anchor
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, nil, fmt.Errorf("create certificate: %w", err)
	}
	p8, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	keyPEM = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: p8})
	certPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	return keyPEM, certPEM, nil
}
