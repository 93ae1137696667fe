package verify

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/sigstore/sigstore-go/pkg/root"
)

// ErrNoTrust means nothing says which signatures to trust: no key, no
// keyless identity, no policy file and no explicit opt-out.
var ErrNoTrust = errors.New("no trust policy: give --key cosign.pub, or --certificate-identity and --certificate-oidc-issuer with --trusted-root FILE, " +
	"or write " + DefaultPolicyPath + " (see docs/signatures.md); --insecure-allow-unsigned accepts unsigned images")

// TrustOptions are the command-line ways to say what to trust; Policy turns
// them into a Policy. The zero value means: use the policy file at its
// default location, and refuse when there is none.
type TrustOptions struct {
	PolicyPath string   // --policy FILE
	Root       string   // --root DIR: the default policy is read under it
	KeyPaths   []string // --key cosign.pub (shorthand for a one-key policy)

	CertIdentity, CertIdentityRegexp string // --certificate-identity[-regexp]
	CertIssuer, CertIssuerRegexp     string // --certificate-oidc-issuer[-regexp]
	TrustedRootPath                  string // --trusted-root FILE

	IgnoreTlog    bool // --insecure-ignore-tlog
	AllowUnsigned bool // --insecure-allow-unsigned

	// VerityCertPaths (--verity-certificate) add a veritySigned
	// requirement: the image must be a disk image whose root hash one of
	// these certificates signed.
	VerityCertPaths []string
}

// Keyless reports whether a keyless identity was given.
func (o TrustOptions) Keyless() bool {
	return o.CertIdentity != "" || o.CertIdentityRegexp != "" || o.CertIssuer != "" || o.CertIssuerRegexp != ""
}

// Policy returns the policy the options describe. Flags naming keys or an
// identity make a policy requiring exactly that for every image; else
// --policy, else the default policy file; else ErrNoTrust.
// --insecure-allow-unsigned accepts anything and cannot be combined with
// keys or identities.
func (o TrustOptions) Policy() (*Policy, error) {
	explicit := len(o.KeyPaths) > 0 || o.Keyless()
	var verityReq []PolicyRequirement
	if len(o.VerityCertPaths) > 0 {
		if o.PolicyPath != "" {
			return nil, errors.New("--policy cannot be combined with --verity-certificate: put a veritySigned requirement in the policy file")
		}
		certs, err := verityCertificates(o.VerityCertPaths)
		if err != nil {
			return nil, err
		}
		verityReq = []PolicyRequirement{{Type: TypeVeritySigned, VerityCertificates: certs}}
	}
	switch {
	case o.AllowUnsigned && (explicit || o.PolicyPath != ""):
		return nil, errors.New("--insecure-allow-unsigned cannot be combined with --key, --policy or keyless flags: it would ignore them")
	case o.AllowUnsigned:
		return &Policy{Default: append([]PolicyRequirement{{Type: TypeInsecureAcceptAnything}}, verityReq...)}, nil
	case explicit && o.PolicyPath != "":
		return nil, errors.New("--policy cannot be combined with --key or keyless flags: put the key in the policy file")
	case explicit:
		req, err := o.requirement()
		if err != nil {
			return nil, err
		}
		return &Policy{Default: append([]PolicyRequirement{{Type: TypeSigstoreSigned, Sigstore: req}}, verityReq...)}, nil
	case verityReq != nil:
		return nil, errors.New("--verity-certificate checks the image; the manifest still needs a signature to trust: add --key or keyless flags (or --insecure-allow-unsigned)")
	case o.PolicyPath != "":
		return LoadPolicy(o.PolicyPath, "")
	}
	def := DefaultPolicyPath
	if o.Root != "" && o.Root != "/" {
		def = filepath.Join(o.Root, DefaultPolicyPath)
	}
	if _, err := os.Stat(def); errors.Is(err, os.ErrNotExist) {
		return nil, ErrNoTrust
	}
	return LoadPolicy(def, o.Root)
}

func (o TrustOptions) requirement() (Requirement, error) {
	req := Requirement{IgnoreTlog: o.IgnoreTlog}
	for _, p := range o.KeyPaths {
		b, err := os.ReadFile(p)
		if err != nil {
			return req, fmt.Errorf("--key: %w", err)
		}
		k, err := LoadPublicKey(b)
		if err != nil {
			return req, fmt.Errorf("--key %s: %w", p, err)
		}
		req.Keys = append(req.Keys, k)
	}
	if o.TrustedRootPath != "" {
		tr, err := root.NewTrustedRootFromPath(o.TrustedRootPath)
		if err != nil {
			return req, fmt.Errorf("--trusted-root %s: %w", o.TrustedRootPath, err)
		}
		req.TrustedMaterial = tr
	}
	if o.Keyless() {
		id := Identity{Subject: o.CertIdentity, SubjectRegexp: o.CertIdentityRegexp, Issuer: o.CertIssuer, IssuerRegexp: o.CertIssuerRegexp}
		if err := id.validate(); err != nil {
			return req, fmt.Errorf("%w (--certificate-identity[-regexp] and --certificate-oidc-issuer[-regexp])", err)
		}
		if req.TrustedMaterial == nil {
			return req, errors.New("keyless verification needs --trusted-root FILE (a Sigstore trusted_root.json); sysext never fetches one from the network")
		}
		req.Identities = append(req.Identities, id)
	}
	return req, nil
}
