package verify

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/sigstore/sigstore-go/pkg/root"

	"github.com/sysext/sysext/internal/inroot"
	"github.com/sysext/sysext/internal/smallfile"
)

// Limits on trust files read: keys and certificates are a few KiB, a
// Sigstore trusted root a few dozen.
const (
	maxKeyFileSize     = 1 << 20
	maxTrustedRootSize = 8 << 20
)

// ErrNoTrust means nothing says which signatures to trust: no key, no
// keyless identity, no policy file and no explicit opt-out.
var ErrNoTrust = errors.New("no trust policy: give --key cosign.pub, or --certificate-identity and --certificate-oidc-issuer with --trusted-root FILE, " +
	"or write " + DefaultPolicyPath + " (see docs/signatures.md); --insecure-allow-unsigned accepts unsigned images")

// ErrInvalidTrustOption is wrapped by Policy's errors about the options
// themselves (flags that cannot be combined, a keyless identity without an
// issuer or with a bad regexp): the caller's input, not the registry's.
var ErrInvalidTrustOption = errors.New("invalid trust options")

type trustOptionError struct{ msg string }

func (e *trustOptionError) Error() string { return e.msg }
func (e *trustOptionError) Unwrap() error { return ErrInvalidTrustOption }

func badTrustOption(format string, args ...any) error {
	return &trustOptionError{fmt.Sprintf(format, args...)}
}

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
	// InRoot says KeyPaths, PolicyPath and TrustedRootPath were read from
	// a file under Root (a declaration, the node's state), so they are
	// paths inside Root and are resolved there (internal/inroot), never on
	// the host. Paths from the command line are host paths.
	InRoot bool
	// Origin names where the options came from, for errors, such as
	// "/etc/sysext/extensions.d/docker.conf:3: Policy=key:/etc/k.pub";
	// "" means the command-line flags.
	Origin string
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
			return nil, badTrustOption("--policy cannot be combined with --verity-certificate: put a veritySigned requirement in the policy file")
		}
		certs, err := o.verityCertificates()
		if err != nil {
			return nil, err
		}
		verityReq = []PolicyRequirement{{Type: TypeVeritySigned, VerityCertificates: certs}}
	}
	switch {
	case o.AllowUnsigned && (explicit || o.PolicyPath != ""):
		return nil, badTrustOption("--insecure-allow-unsigned cannot be combined with --key, --policy or keyless flags: it would ignore them")
	case o.AllowUnsigned:
		return &Policy{Default: append([]PolicyRequirement{{Type: TypeInsecureAcceptAnything}}, verityReq...)}, nil
	case explicit && o.PolicyPath != "":
		return nil, badTrustOption("--policy cannot be combined with --key or keyless flags: put the key in the policy file")
	case explicit:
		req, err := o.requirement()
		if err != nil {
			return nil, err
		}
		return &Policy{Default: append([]PolicyRequirement{{Type: TypeSigstoreSigned, Sigstore: req}}, verityReq...)}, nil
	case verityReq != nil:
		return nil, badTrustOption("--verity-certificate checks the image; the manifest still needs a signature to trust: add --key or keyless flags (or --insecure-allow-unsigned)")
	case o.PolicyPath != "" && o.InRoot:
		p, err := LoadPolicy(o.PolicyPath, o.Root)
		return p, o.wrap(err)
	case o.PolicyPath != "":
		return LoadPolicy(o.PolicyPath, "")
	}
	// The default policy is the target tree's own, read inside it.
	if _, err := inroot.Stat(o.Root, DefaultPolicyPath); errors.Is(err, os.ErrNotExist) {
		return nil, ErrNoTrust
	}
	return LoadPolicy(DefaultPolicyPath, o.Root)
}

// wrap names where the options came from in err.
func (o TrustOptions) wrap(err error) error {
	if err == nil || o.Origin == "" {
		return err
	}
	return fmt.Errorf("%s: %w", o.Origin, err)
}

// readFile reads a file the options name: inside Root when InRoot, else on
// the host as the user wrote it (a relative --key is relative to the
// working directory).
func (o TrustOptions) readFile(p string, limit int64) ([]byte, error) {
	if o.InRoot {
		if !filepath.IsAbs(p) {
			return nil, fmt.Errorf("%s: a path read from a file under the root must be absolute (as seen on the node)", p)
		}
		return inroot.ReadFile(o.Root, p, limit)
	}
	return smallfile.Read(p, limit)
}

func (o TrustOptions) requirement() (Requirement, error) {
	req := Requirement{IgnoreTlog: o.IgnoreTlog}
	keyFlag, rootFlag := "--key", "--trusted-root"
	if o.Origin != "" {
		keyFlag, rootFlag = o.Origin+": key", o.Origin+": trusted root"
	}
	for _, p := range o.KeyPaths {
		b, err := o.readFile(p, maxKeyFileSize)
		if err != nil {
			return req, fmt.Errorf("%s: %w", keyFlag, err)
		}
		k, err := LoadPublicKey(b)
		if err != nil {
			return req, fmt.Errorf("%s %s: %w", keyFlag, p, err)
		}
		req.Keys = append(req.Keys, k)
	}
	if o.TrustedRootPath != "" {
		b, err := o.readFile(o.TrustedRootPath, maxTrustedRootSize)
		if err != nil {
			return req, fmt.Errorf("%s: %w", rootFlag, err)
		}
		tr, err := root.NewTrustedRootFromJSON(b)
		if err != nil {
			return req, fmt.Errorf("%s %s: %w", rootFlag, o.TrustedRootPath, err)
		}
		req.TrustedMaterial = tr
	}
	if o.Keyless() {
		id := Identity{Subject: o.CertIdentity, SubjectRegexp: o.CertIdentityRegexp, Issuer: o.CertIssuer, IssuerRegexp: o.CertIssuerRegexp}
		if err := id.validate(); err != nil {
			return req, badTrustOption("%v (--certificate-identity[-regexp] and --certificate-oidc-issuer[-regexp])", err)
		}
		if req.TrustedMaterial == nil {
			return req, badTrustOption("keyless verification needs --trusted-root FILE (a Sigstore trusted_root.json); sysext never fetches one from the network")
		}
		req.Identities = append(req.Identities, id)
	}
	return req, nil
}
