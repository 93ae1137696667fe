package main

import (
	"context"

	"github.com/spf13/cobra"

	"github.com/sysext/sysext/internal/mediatype"
	"github.com/sysext/sysext/oci"
	"github.com/sysext/sysext/publish"
	"github.com/sysext/sysext/verify"
)

func init() { register("sign", newSignCommand) }

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
	signed, err := publish.Sign(ctx, t, ref, signer)
	if err != nil {
		return err
	}
	return printSigned(c, opts.outputFlags, ref, signer, signed)
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
