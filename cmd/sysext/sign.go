package main

import (
	"context"
	"crypto"
	"fmt"
	"strings"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/spf13/cobra"

	"github.com/sysext/sysext/internal/mediatype"
	"github.com/sysext/sysext/oci"
	"github.com/sysext/sysext/verify"
)

func init() { register(newSignCommand) }

// signOptions are the flags of `sysext sign`.
type signOptions struct {
	registryFlags
	outputFlags
	Key string
}

func newSignCommand() *cobra.Command {
	var opts signOptions
	c := &cobra.Command{
		Use:   "sign REF --key cosign.key",
		Short: "Sign an extension already in a registry or OCI layout, as cosign does",
		Long: `Sign the manifest REF points to with a cosign private key and, when REF is
an index, every per-architecture manifest it lists, so that a node verifies
the manifest it installs. Signatures are stored as cosign stores them: a
manifest under the tag sha256-<hex>.sig whose layers are signed payloads;
a signature is appended when the tag already holds some. cosign v2 and v3
verify them ('cosign verify --key cosign.pub --insecure-ignore-tlog REF').

Each payload names REF's tag and the signing time (the optional annotations
"tag" and "timestamp", as 'cosign sign -a' writes them), so a node whose
policy asks for fresh signatures refuses an old one served again.

The key password comes from $COSIGN_PASSWORD or a terminal prompt.
Nothing is written to a transparency log. See docs/signatures.md.`,
		Args: argsUsage(cobra.ExactArgs(1)),
		RunE: func(c *cobra.Command, args []string) error {
			return runSign(c.Context(), c, opts, args)
		},
	}
	opts.registryFlags.addFlags(c)
	opts.outputFlags.addFlags(c)
	c.Flags().StringVar(&opts.Key, "key", "", "cosign private key `FILE` (cosign.key)")
	return c
}

func runSign(ctx context.Context, c *cobra.Command, opts signOptions, args []string) error {
	if opts.Key == "" {
		return usageError("sign needs --key FILE (make one with 'sysext generate-key-pair')")
	}
	if _, err := oci.ParseReference(args[0]); err != nil {
		return err // before the key's password is asked for
	}
	signer, err := loadSigner(c, opts.Key)
	if err != nil {
		return err
	}
	ref, t, err := openReference(ctx, args[0], opts.registryFlags, false)
	if err != nil {
		return err
	}
	signed, err := signReference(ctx, t, ref, signer)
	if err != nil {
		return err
	}
	return printSigned(c, opts.outputFlags, ref, signer, signed)
}

// signReference signs what ref points to (and its per-architecture
// manifests) in t.
func signReference(ctx context.Context, t oci.Target, ref oci.Reference, signer *verify.Signer) ([]verify.Signed, error) {
	desc, err := resolveRef(ctx, t, ref)
	if err != nil {
		return nil, err
	}
	// The payloads name the tag and the time, so a node's policy can refuse
	// an old signature served again (docs/signatures.md, freshness).
	signed, err := verify.SignTree(ctx, t, desc, ref.Scope(), signer.WithFreshness(ref.Tag, time.Now()))
	if err != nil {
		return signed, fmt.Errorf("%s: %w", ref, err)
	}
	return signed, nil
}

// pushSigning is push's --sign --key: the key is loaded (and its password
// checked) before anything is uploaded, and what the push wrote is signed
// after it.
type pushSigning struct {
	Sign          bool
	Key           string
	AllowUnsigned bool // --allow-unsigned: --append may replace a signed index without its signer
}

func (f *pushSigning) addFlags(c *cobra.Command) {
	c.Flags().BoolVar(&f.Sign, "sign", false, "sign each pushed manifest and the index (cosign format; needs --key)")
	c.Flags().StringVar(&f.Key, "key", "", "cosign private key `FILE` for --sign")
	c.Flags().BoolVar(&f.AllowUnsigned, "allow-unsigned", false, "with --append: replace a signed index even though the new one is unsigned (or signed by another key)")
}

// signer loads the key, or returns nil when --sign is not given.
func (f pushSigning) signer(c *cobra.Command) (*verify.Signer, error) {
	switch {
	case f.Sign && f.Key == "":
		return nil, usageError("--sign needs --key FILE (make one with 'sysext generate-key-pair')")
	case !f.Sign && f.Key != "":
		return nil, usageError("--key is only used with --sign")
	case !f.Sign:
		return nil, nil
	}
	return loadSigner(c, f.Key)
}

// replacingSigned is push --append's check before anything is uploaded:
// when what the tag points at is signed (the index, or else one of its
// manifests), the new index must be signed by the same key, or the user
// says with allowUnsigned that losing that signer is meant. Otherwise a
// node that checks signatures would refuse the tag after a silent push.
func replacingSigned(t oci.Target, ref oci.Reference, signer *verify.Signer, keyPath string, allowUnsigned bool) func(context.Context, ocispec.Descriptor, []ocispec.Descriptor) error {
	if allowUnsigned {
		return nil
	}
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

// signPushed signs the manifests a push wrote, then its index (kept
// architectures keep the signatures they have). A failure says how to
// finish the job: the artifact is pushed, only its signatures are missing.
func signPushed(ctx context.Context, t oci.Target, res *oci.PushResult, s *verify.Signer, keyPath string) ([]verify.Signed, error) {
	var out []verify.Signed
	s = s.WithFreshness(res.Ref.Tag, time.Now()) // as signReference does
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

// resolveRef resolves ref in t; the error names ref once (registry errors
// already do).
func resolveRef(ctx context.Context, t oci.Target, ref oci.Reference) (ocispec.Descriptor, error) {
	desc, err := t.Resolve(ctx, ref.Reference())
	if err != nil && !strings.Contains(err.Error(), ref.Scope()) {
		err = fmt.Errorf("%s: %w", ref, err)
	}
	return desc, err
}

func printSigned(c *cobra.Command, out outputFlags, ref oci.Reference, signer *verify.Signer, signed []verify.Signed) error {
	w := c.OutOrStdout()
	if out.JSON {
		type signedJSON struct {
			Digest    string `json:"digest"`
			MediaType string `json:"mediaType"`
			Tag       string `json:"tag"`
			Signature string `json:"signatureManifest"`
		}
		res := struct {
			Reference string       `json:"reference"`
			Signer    string       `json:"signer"`
			Signed    []signedJSON `json:"signed"`
		}{Reference: ref.String(), Signer: signer.Fingerprint()}
		for _, s := range signed {
			res.Signed = append(res.Signed, signedJSON{s.Digest.String(), s.MediaType, s.Tag, s.Manifest.Digest.String()})
		}
		return printJSON(w, res)
	}
	for _, s := range signed {
		if out.Quiet {
			printLine(w, s.Digest.String())
			continue
		}
		printf(w, "signed %s (%s) with %s: tag %s\n", s.Digest, kindOf(s.MediaType), signer.Fingerprint(), s.Tag)
	}
	return nil
}

func kindOf(mediaType string) string {
	if mediatype.IsIndex(mediaType) {
		return "index"
	}
	return "manifest"
}
