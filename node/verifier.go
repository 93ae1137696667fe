package node

import (
	"context"
	"fmt"
	"net/url"
	"strings"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/sysext/sysext/oci"
	"github.com/sysext/sysext/verify"
)

// PolicyVerifier applies verify's trust policy. Trust holds the command
// line's choices; a per-extension policy recorded at pull time (a policy
// file, "key:PATH[,PATH]" for --key, or "trust:" + URL query for keyless
// flags) replaces them on update and sync.
type PolicyVerifier struct {
	Trust verify.TrustOptions
}

// Keys of the "trust:" form of a recorded policy.
const (
	trustPrefix     = "trust:"
	qKey            = "key"
	qIdentity       = "identity"
	qIdentityRegexp = "identity-regexp"
	qIssuer         = "issuer"
	qIssuerRegexp   = "issuer-regexp"
	qTrustedRoot    = "trusted-root"
	qIgnoreTlog     = "ignore-tlog"
	qVerityCert     = "verity-certificate"
)

// PolicyString is what the state records for the trust options given to a
// pull, so updates keep checking the same way. Paths should be absolute.
func PolicyString(t verify.TrustOptions) string {
	switch {
	case len(t.KeyPaths) > 0 && !t.Keyless() && t.TrustedRootPath == "" && !t.IgnoreTlog && len(t.VerityCertPaths) == 0 && !strings.Contains(strings.Join(t.KeyPaths, ""), ","):
		// The older form, kept for plain keys so states stay readable by
		// earlier versions.
		return "key:" + strings.Join(t.KeyPaths, ",")
	case len(t.KeyPaths) > 0 || t.Keyless():
		q := url.Values{}
		for _, k := range t.KeyPaths {
			q.Add(qKey, k)
		}
		for k, v := range map[string]string{qIdentity: t.CertIdentity, qIdentityRegexp: t.CertIdentityRegexp,
			qIssuer: t.CertIssuer, qIssuerRegexp: t.CertIssuerRegexp, qTrustedRoot: t.TrustedRootPath} {
			if v != "" {
				q.Set(k, v)
			}
		}
		if t.IgnoreTlog {
			q.Set(qIgnoreTlog, "1")
		}
		for _, c := range t.VerityCertPaths {
			q.Add(qVerityCert, c)
		}
		return trustPrefix + q.Encode()
	default:
		return t.PolicyPath
	}
}

// trustFromPolicy applies a recorded policy string to o.
func trustFromPolicy(o verify.TrustOptions, policy string) (verify.TrustOptions, error) {
	if keys, ok := strings.CutPrefix(policy, "key:"); ok {
		return verify.TrustOptions{Root: o.Root, KeyPaths: strings.Split(keys, ",")}, nil
	}
	if enc, ok := strings.CutPrefix(policy, trustPrefix); ok {
		q, err := url.ParseQuery(enc)
		if err != nil {
			return o, fmt.Errorf("recorded trust policy %q: %w: pull the extension again with its trust flags", policy, err)
		}
		return verify.TrustOptions{
			Root:               o.Root,
			KeyPaths:           q[qKey],
			CertIdentity:       q.Get(qIdentity),
			CertIdentityRegexp: q.Get(qIdentityRegexp),
			CertIssuer:         q.Get(qIssuer),
			CertIssuerRegexp:   q.Get(qIssuerRegexp),
			TrustedRootPath:    q.Get(qTrustedRoot),
			IgnoreTlog:         q.Get(qIgnoreTlog) != "",
			VerityCertPaths:    q[qVerityCert],
		}, nil
	}
	if policy != "" {
		return verify.TrustOptions{Root: o.Root, PolicyPath: policy}, nil
	}
	return o, nil
}

// Trust is what one extension's signatures are checked with.
type Trust struct {
	// Policy is the extension's own policy ("" = the command line's
	// trust): a recorded PolicyString, or a declaration's Policy=.
	Policy string
	// From names the file under the root Policy was read from: a
	// declaration "FILE:LINE", or the declaration a recorded policy came
	// from. Its paths are then inside the root (never the host's), and
	// errors name it. "" means Policy came from the command line.
	From string
	// AllowUnsigned is --insecure-allow-unsigned (or a declaration's
	// InsecureAllowUnsigned=yes).
	AllowUnsigned bool
}

// trustOptions turns tr into verify's options on top of the command line's.
func (p PolicyVerifier) trustOptions(tr Trust) (verify.TrustOptions, error) {
	o, err := trustFromPolicy(p.Trust, tr.Policy)
	if err != nil {
		if tr.From != "" {
			err = fmt.Errorf("%s: %w", tr.From, err)
		}
		return o, err
	}
	if tr.From != "" && tr.Policy != "" {
		o.InRoot = true
		o.Origin = tr.From + ": Policy=" + tr.Policy
	}
	if tr.AllowUnsigned {
		// The opt-out is for the manifest's signature; a disk image must
		// still be signed by the certificates asked for.
		o = verify.TrustOptions{Root: o.Root, AllowUnsigned: true, VerityCertPaths: o.VerityCertPaths, InRoot: o.InRoot, Origin: o.Origin}
	}
	return o, nil
}

// CheckTrust implements TrustChecker: the policy tr names loads.
func (p PolicyVerifier) CheckTrust(tr Trust) error {
	o, err := p.trustOptions(tr)
	if err != nil {
		return err
	}
	_, err = o.Policy()
	return err
}

// Verify implements Verifier. A signature on the manifest, or on the index
// r resolved through when that index lists the manifest (what `cosign sign`
// on an index writes without --recursive), is accepted; the Verified value
// is always for the manifest's digest.
func (p PolicyVerifier) Verify(ctx context.Context, t oci.Target, ref oci.Reference, r *oci.Resolved, tr Trust) (verify.Verified, error) {
	o, err := p.trustOptions(tr)
	if err != nil {
		return verify.Verified{}, err
	}
	pol, err := o.Policy()
	if err != nil {
		return verify.Verified{}, err
	}
	var idx ocispec.Descriptor
	if r.Index != nil {
		idx = r.Root
	}
	return pol.VerifyEntry(ctx, t, ref.String(), idx, r.Descriptor)
}
