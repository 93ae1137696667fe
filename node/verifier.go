package node

import (
	"context"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/sysext/sysext/oci"
	"github.com/sysext/sysext/store"
	"github.com/sysext/sysext/verify"
)

// PolicyVerifier applies verify's trust policy. Trust holds the command
// line's choices; an extension's recorded or declared trust (store.Trust)
// replaces them.
type PolicyVerifier struct {
	Trust verify.TrustOptions
}

// Trust is what one extension's signatures are checked with.
type Trust struct {
	// Recorded is the extension's own trust (zero: the command line's): as
	// its pull recorded it, or its declaration's Policy=.
	Recorded store.Trust
	// From names the file under the root Recorded was read from: a
	// declaration "FILE:LINE", or the declaration a recorded trust came
	// from. Its paths are then inside the root (never the host's), and
	// errors name it. "" means Recorded came from the command line.
	From string
	// AllowUnsigned is --insecure-allow-unsigned (or a declaration's
	// InsecureAllowUnsigned=yes).
	AllowUnsigned bool
}

// trustOptions turns tr into verify's options on top of the command line's.
func (p PolicyVerifier) trustOptions(tr Trust) (verify.TrustOptions, error) {
	o := tr.Recorded.Options(p.Trust)
	if tr.From != "" && !tr.Recorded.IsZero() {
		o.InRoot = true
		o.Origin = tr.From + ": Policy=" + tr.Recorded.String()
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

// Verify implements Verifier: the check before a download (pull, update,
// sync and fetch). A signature on the manifest, or on the index r resolved
// through when that index lists the manifest (what `cosign sign` on an
// index writes without --recursive), is accepted; the Verified value is
// always for the manifest's digest, and checked to be.
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
	v, err := pol.VerifyEntry(ctx, t, ref.String(), idx, r.Descriptor)
	if err != nil {
		return verify.Verified{}, err
	}
	return v, v.Check(r.Descriptor.Digest)
}
