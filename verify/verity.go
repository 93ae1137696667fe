package verify

import (
	"crypto/x509"
	"errors"
	"fmt"
	"strings"

	"github.com/sysext/sysext/fsimage"
	"github.com/sysext/sysext/verity"
)

// The second half of the chain of trust. A cosign signature covers the
// manifest, and through it the annotations naming the image's verity root
// hash and signing certificate; a "veritySigned" requirement makes the node
// check, on the downloaded image, that the root hash is signed by a
// certificate the policy names. The kernel then enforces that root hash at
// every read for as long as the extension stays merged (activate installs
// the certificate and the image policy for systemd).

// verityRequirement is what a scope asks of the image itself.
type verityRequirement struct {
	certs []*x509.Certificate
	scope string
}

// VerityCertificates are the certificates the scope's veritySigned
// requirements name: the image must be a disk image whose root hash one of
// them signed. Nil when the scope requires none.
func (v Verified) VerityCertificates() []*x509.Certificate {
	return append([]*x509.Certificate(nil), v.verity.certs...)
}

// ErrVerityRequired: the policy asks for a signed disk image and the
// artifact is not one, or not signed by a certificate it names.
var ErrVerityRequired = errors.New("the trust policy requires a disk image whose verity root hash is signed by a certificate it names")

// CheckVerityAnnotations is the check before the download: the manifest
// (covered by the cosign signature) must name a verity root hash and a
// signing certificate the policy trusts. Empty annotations mean the
// manifest names none.
func (v Verified) CheckVerityAnnotations(rootHash, certSHA256 string) error {
	if len(v.verity.certs) == 0 {
		return nil
	}
	switch {
	case rootHash == "":
		return fmt.Errorf("%w (scope %s): the manifest names no verity root hash, so the image is no signed disk image", ErrVerityRequired, v.verity.scope)
	case certSHA256 == "":
		return fmt.Errorf("%w (scope %s): the manifest names no verity signing certificate", ErrVerityRequired, v.verity.scope)
	}
	for _, c := range v.verity.certs {
		if verity.Fingerprint(c) == certSHA256 {
			return nil
		}
	}
	return fmt.Errorf("%w (scope %s): the manifest says certificate SHA-256 %s signed it, which the policy does not name (it names %s)", ErrVerityRequired, v.verity.scope, certSHA256, v.trusted())
}

func (v Verified) trusted() string {
	var fps []string
	for _, c := range v.verity.certs {
		fps = append(fps, c.Subject.String()+" "+verity.Fingerprint(c)[:16]+"…")
	}
	return strings.Join(fps, ", ")
}

// CheckVerity is the check on the downloaded image, whose hash tree was
// checked against its data and whose tree gave rootHash: its signature
// partition must sign rootHash with a certificate the policy names
// (found by issuer and serial number, as the kernel and systemd do; the
// certificate the image carries is never trusted). It returns that
// certificate; nil and no error when the scope requires no signature.
func (v Verified) CheckVerity(d *fsimage.DDI, rootHash []byte) (*x509.Certificate, error) {
	if len(v.verity.certs) == 0 {
		return nil, nil
	}
	switch {
	case d == nil:
		return nil, fmt.Errorf("%w (scope %s): the image is not a disk image", ErrVerityRequired, v.verity.scope)
	case d.SignaturePartition() == nil:
		return nil, fmt.Errorf("%w (scope %s): the disk image has no signature partition", ErrVerityRequired, v.verity.scope)
	case d.SignatureErr != nil:
		return nil, fmt.Errorf("the disk image's signature partition: %w", d.SignatureErr)
	}
	c, err := d.Signature.Check(rootHash, v.verity.certs)
	if err != nil {
		return nil, fmt.Errorf("the disk image's verity signature (policy scope %s): %w", v.verity.scope, err)
	}
	return c, nil
}

// verityRequirement reads a veritySigned entry.
func (l *loader) verityRequirement(rf requirementFile) (PolicyRequirement, error) {
	r := PolicyRequirement{Type: TypeVeritySigned}
	if rf.KeyPath != "" || rf.KeyPaths != nil || rf.KeyData != nil || rf.KeyDatas != nil || rf.Fulcio != nil || rf.SignedIdentity != nil || rf.TrustedRootPath != "" {
		return r, errors.New(`"veritySigned" takes certPath, certPaths or certData (PEM X.509 certificates), not cosign keys`)
	}
	pems, err := l.pems("certPath", rf.CertPath, rf.CertPaths, rf.CertData)
	if err != nil {
		return r, err
	}
	if len(pems) == 0 {
		return r, errors.New(`"veritySigned" needs "certPath", "certPaths" or "certData"`)
	}
	for _, b := range pems {
		certs, err := verity.ParseCertificates(b)
		if err != nil {
			return r, err
		}
		r.VerityCertificates = append(r.VerityCertificates, certs...)
	}
	return r, nil
}

// verityCertificates reads the certificate files of --verity-certificate
// (inside Root when the options came from a file under it).
func (o TrustOptions) verityCertificates() ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for _, p := range o.VerityCertPaths {
		b, err := o.readFile(p, maxKeyFileSize)
		if err != nil {
			return nil, fmt.Errorf("--verity-certificate: %w", err)
		}
		certs, err := verity.ParseCertificates(b)
		if err != nil {
			return nil, fmt.Errorf("--verity-certificate %s: %w", p, err)
		}
		out = append(out, certs...)
	}
	return out, nil
}
