package publish

import (
	"context"
	"crypto"
	"fmt"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2"

	"github.com/sysext/sysext/oci"
	"github.com/sysext/sysext/verify"
)

// Options tune Push; the zero value pushes a new unsigned index.
type Options struct {
	// Push is oci.Push's options; Push sets Replacing itself.
	Push oci.PushOptions
	// Signer, when set, signs what the push wrote.
	Signer *verify.Signer
	// KeyPath names the signer's key file in messages.
	KeyPath string
	// AllowUnsigned lets Push.Append replace a signed index without its
	// signer (--allow-unsigned).
	AllowUnsigned bool
}

// Result is what Push wrote and signed.
type Result struct {
	*oci.PushResult
	Signed []verify.Signed // each pushed manifest, then the index
}

// Push pushes files to ref in t as oci.Push does and, with a Signer, signs
// each manifest the push wrote and then its index. With Append, a signed
// index (or a signed manifest of it) at the tag is replaced only by one
// signed with the same key, unless AllowUnsigned. When the push succeeded
// and signing failed, the result is returned with the error, which says
// how to finish: the artifact is there, only its signatures are missing.
func Push(ctx context.Context, t oras.Target, ref oci.Reference, files []string, o Options) (*Result, error) {
	po := o.Push
	if !o.AllowUnsigned {
		po.Replacing = replacingSigned(t, ref, o.Signer, o.KeyPath)
	}
	pushed, err := oci.Push(ctx, t, ref, files, po)
	if err != nil {
		return nil, err
	}
	res := &Result{PushResult: pushed}
	if o.Signer == nil {
		return res, nil
	}
	res.Signed, err = signPushed(ctx, t, pushed, o.Signer, o.KeyPath)
	return res, err
}

// Sign signs what ref points to in t and, for an index, every image
// manifest it lists (verify.SignTree). The payloads name ref's tag and the
// time, so a node whose policy asks for fresh signatures refuses an old
// one served again.
func Sign(ctx context.Context, t oras.Target, ref oci.Reference, s *verify.Signer) ([]verify.Signed, error) {
	desc, err := oci.ResolveRoot(ctx, t, ref)
	if err != nil {
		return nil, err
	}
	signed, err := verify.SignTree(ctx, t, desc, ref.Scope(), fresh(s, ref))
	if err != nil {
		return signed, fmt.Errorf("%s: %w", ref, err)
	}
	return signed, nil
}

// fresh is s with the freshness annotations for ref (docs/signatures.md).
func fresh(s *verify.Signer, ref oci.Reference) *verify.Signer {
	return s.WithFreshness(ref.Tag, time.Now())
}

// signPushed signs the manifests a push wrote, then its index (kept
// architectures keep the signatures they have).
func signPushed(ctx context.Context, t oras.Target, res *oci.PushResult, s *verify.Signer, keyPath string) ([]verify.Signed, error) {
	var out []verify.Signed
	s = fresh(s, res.Ref)
	descs := make([]ocispec.Descriptor, 0, len(res.Manifests)+1)
	for _, m := range res.Manifests {
		descs = append(descs, m.Descriptor)
	}
	descs = append(descs, res.Index)
	for _, d := range descs {
		sd, err := verify.Sign(ctx, t, d, res.Ref.Scope(), s)
		if err != nil {
			return out, fmt.Errorf("%s was pushed but not signed (run 'sysext sign %s --key %s'): %w", res.Ref, res.Ref, keyPath, err)
		}
		out = append(out, sd)
	}
	return out, nil
}

// replacingSigned is Append's check before anything is uploaded: when what
// the tag points at is signed (the index, or else one of its manifests),
// the new index must be signed by the same key.
func replacingSigned(t oras.Target, ref oci.Reference, signer *verify.Signer, keyPath string) func(context.Context, ocispec.Descriptor, []ocispec.Descriptor) error {
	return func(ctx context.Context, old ocispec.Descriptor, entries []ocispec.Descriptor) error {
		var pub crypto.PublicKey
		if signer != nil {
			pub = signer.PublicKey()
		}
		signed, byKey, err := verify.SignedBy(ctx, t, old, pub)
		if err != nil {
			return fmt.Errorf("push --append: read the signatures of %s: %w", ref, err)
		}
		what := "the index"
		if !signed {
			// cosign may have signed each manifest and not the index.
			for _, d := range entries {
				if d.Digest == old.Digest {
					continue
				}
				s, k, err := verify.SignedBy(ctx, t, d, pub)
				if err != nil {
					return fmt.Errorf("push --append: read the signatures of %s: %w", ref.WithDigest(d.Digest), err)
				}
				if s {
					signed, byKey, what = true, k, "a manifest of the index ("+oci.PlatformString(d.Platform)+")"
					break
				}
			}
		}
		switch {
		case !signed:
			return nil
		case signer == nil:
			return fmt.Errorf("push --append: %s at %s is signed; the new index would be unsigned and nodes that check signatures would refuse it: add --sign --key FILE (the key that signed it), or --allow-unsigned to replace it unsigned", what, ref)
		case !byKey:
			return fmt.Errorf("push --append: %s at %s is signed, but not by --key %s (%s): nodes that trust its signer would refuse the new index: sign with that key, or add --allow-unsigned to replace its signer", what, ref, keyPath, signer.Fingerprint())
		}
		return nil
	}
}
