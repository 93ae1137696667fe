package node

import (
	"context"
	"strings"

	"github.com/sysext/sysext/oci"
	"github.com/sysext/sysext/verify"
)

// PolicyVerifier applies verify's trust policy. Trust holds the command
// line's choices; a per-extension policy recorded at pull time (a policy
// file, or "key:PATH[,PATH]" for --key) replaces them on update and sync.
type PolicyVerifier struct {
	Trust verify.TrustOptions
}

// PolicyString is what the state records for the trust options given to a
// pull, so updates keep checking the same way.
func PolicyString(t verify.TrustOptions) string {
	switch {
	case len(t.KeyPaths) > 0:
		return "key:" + strings.Join(t.KeyPaths, ",")
	default:
		return t.PolicyPath
	}
}

// Verify implements Verifier.
func (p PolicyVerifier) Verify(ctx context.Context, t oci.Target, ref oci.Reference, e *oci.Entry, policy string, allowUnsigned bool) (verify.Verified, error) {
	o := p.Trust
	if keys, ok := strings.CutPrefix(policy, "key:"); ok {
		o.KeyPaths, o.PolicyPath = strings.Split(keys, ","), ""
	} else if policy != "" {
		o.PolicyPath, o.KeyPaths = policy, nil
	}
	if allowUnsigned {
		o = verify.TrustOptions{Root: o.Root, AllowUnsigned: true}
	}
	pol, err := o.Policy()
	if err != nil {
		return verify.Verified{}, err
	}
	return pol.Verify(ctx, t, ref.String(), e.Descriptor)
}
