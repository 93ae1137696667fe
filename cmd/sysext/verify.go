package main

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/sysext/sysext/oci"
	"github.com/sysext/sysext/verify"
)

func init() { register("verify", newVerifyCommand) }

// trustFlags say what signatures to trust; verify, fetch, pull and update
// share them.
type trustFlags struct {
	verify.TrustOptions
}

// addFlags registers the trust flags; withOptOut adds
// --insecure-allow-unsigned (not for `verify`, whose job is to check).
func (f *trustFlags) addFlags(c *cobra.Command, withOptOut bool) {
	fs := c.Flags()
	fs.StringArrayVar(&f.KeyPaths, "key", nil, "trust signatures by this cosign public key `FILE` (repeatable)")
	fs.StringVar(&f.PolicyPath, "policy", "", "trust policy `FILE` (default "+verify.DefaultPolicyPath+", under --root when given)")
	f.addKeylessFlags(c)
	if withOptOut {
		fs.BoolVar(&f.AllowUnsigned, "insecure-allow-unsigned", false, "accept images without a valid signature (prints a warning)")
	}
}

// addKeylessFlags registers the keyless flags and --insecure-ignore-tlog
// (the node commands register their own --key and --policy).
func (f *trustFlags) addKeylessFlags(c *cobra.Command) {
	fs := c.Flags()
	fs.StringVar(&f.CertIdentity, "certificate-identity", "", "keyless: the signer's certificate identity (email or URI)")
	fs.StringVar(&f.CertIdentityRegexp, "certificate-identity-regexp", "", "keyless: a regular expression the certificate identity must match")
	fs.StringVar(&f.CertIssuer, "certificate-oidc-issuer", "", "keyless: the OIDC issuer of the signer's certificate")
	fs.StringVar(&f.CertIssuerRegexp, "certificate-oidc-issuer-regexp", "", "keyless: a regular expression the OIDC issuer must match")
	fs.StringVar(&f.TrustedRootPath, "trusted-root", "", "keyless: Sigstore trusted root `FILE` (trusted_root.json); never fetched from the network")
	fs.BoolVar(&f.IgnoreTlog, "insecure-ignore-tlog", false, "do not require transparency-log entries")
}

// policy turns the flags into a policy; root is the --root directory, if
// the command has one. Missing trust fails (exit 1, as pull does) with
// verify.ErrNoTrust's sentence, which says what to give.
func (f trustFlags) policy(c *cobra.Command, root string) (*verify.Policy, error) {
	o := f.TrustOptions
	o.Root = root
	p, err := o.Policy()
	if err != nil {
		return nil, err
	}
	f.warnUnsigned(c)
	return p, nil
}

// warnUnsigned says what --insecure-allow-unsigned gives up, when given.
func (f trustFlags) warnUnsigned(c *cobra.Command) {
	if f.AllowUnsigned {
		printLine(c.ErrOrStderr(), "sysext: WARNING: --insecure-allow-unsigned: signatures are not checked; anyone who can write to the registry can run code on this machine")
	}
}

// verifyOptions are the flags of `sysext verify`.
type verifyOptions struct {
	registryFlags
	trustFlags
	JSON bool
	Root string
}

func newVerifyCommand() *cobra.Command {
	var opts verifyOptions
	c := &cobra.Command{
		Use:   "verify REF",
		Short: "Check the signatures on an extension against a key or the trust policy",
		Long: `Check the signatures on what REF points to and print who signed what.
Signatures are found as cosign stores them: the sha256-<hex>.sig tag (cosign
v2, sysext sign) and Sigstore bundles attached as OCI referrers (cosign v3),
through the referrers API or its sha256-<hex> fallback tag.

Trust comes from --key (a cosign public key), or keyless flags
(--certificate-identity[-regexp] and --certificate-oidc-issuer[-regexp] with
--trusted-root), or a policy file (--policy, default
/etc/sysext/policy.json). Transparency-log entries are required and checked
when the trusted root holds the log's key; --insecure-ignore-tlog skips them.

REF is verified when its own manifest has a valid signature, or when it is
an index and every per-architecture manifest in it has one. A signature on
the index also covers the manifests it lists (what a node installs). See
docs/signatures.md.

Exits 0 when verified, 1 when there is no valid signature, or no key and
no policy.`,
		Args: argsUsage(cobra.ExactArgs(1)),
		RunE: func(c *cobra.Command, args []string) error {
			return runVerify(c.Context(), c, opts, args)
		},
	}
	opts.registryFlags.addFlags(c)
	opts.trustFlags.addFlags(c, false)
	c.Flags().BoolVar(&opts.JSON, "json", false, "print the result as JSON")
	c.Flags().StringVar(&opts.Root, "root", "", "read the default policy under `DIR`")
	return c
}

// verifyReport is what `verify --json` prints.
type verifyReport struct {
	Reference  string             `json:"reference"`
	Digest     string             `json:"digest"`
	MediaType  string             `json:"mediaType"`
	Verified   bool               `json:"verified"`
	Signatures []verify.Signature `json:"signatures"`
	Error      string             `json:"error,omitempty"`
	Manifests  []verifyReport     `json:"manifests,omitempty"`
	Platform   string             `json:"platform,omitempty"`
}

func runVerify(ctx context.Context, c *cobra.Command, opts verifyOptions, args []string) error {
	if _, err := oci.ParseReference(args[0]); err != nil {
		return err
	}
	p, err := opts.trustFlags.policy(c, opts.Root)
	if err != nil {
		return err
	}
	ref, t, err := openReference(ctx, args[0], opts.registryFlags, false)
	if err != nil {
		return err
	}
	rep, err := verifyReference(ctx, p, t, ref)
	if err != nil {
		return err
	}
	w := c.OutOrStdout()
	if opts.JSON {
		if err := printJSON(w, rep); err != nil {
			return err
		}
	} else {
		printVerifyReport(w, rep)
	}
	if !rep.Verified {
		if opts.JSON {
			return fmt.Errorf("%s: no valid signature", ref)
		}
		return errors.New(rep.Error)
	}
	return nil
}

// verifyReference resolves ref and reports verify's VerifyTree for it.
func verifyReference(ctx context.Context, p *verify.Policy, t oci.Target, ref oci.Reference) (*verifyReport, error) {
	desc, err := oci.ResolveRoot(ctx, t, ref)
	if err != nil {
		return nil, err
	}
	tree, err := p.VerifyTree(ctx, t, ref.String(), desc)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", ref, err)
	}
	rep := newVerifyReport(ref, tree.TreeEntry)
	for _, m := range tree.Manifests {
		rep.Manifests = append(rep.Manifests, newVerifyReport(ref, m))
	}
	return &rep, nil
}

func newVerifyReport(ref oci.Reference, e verify.TreeEntry) verifyReport {
	d := e.Descriptor
	r := verifyReport{Reference: ref.WithDigest(d.Digest).String(), Digest: d.Digest.String(), MediaType: d.MediaType, Verified: e.Verified, Signatures: []verify.Signature{}}
	if d.Platform != nil {
		r.Platform = oci.PlatformString(d.Platform)
	}
	r.Signatures = append(r.Signatures, e.Signatures...)
	switch {
	case e.Err != nil:
		r.Error = e.Err.Error()
	case e.Unsigned:
		r.Error = "accepted without a signature by the policy"
	}
	return r
}

func printVerifyReport(w io.Writer, rep *verifyReport) {
	line := func(r verifyReport, indent string) {
		what := kindOf(r.MediaType)
		if r.Platform != "" {
			what += " " + r.Platform
		}
		switch {
		case r.Verified && len(r.Signatures) == 0:
			printf(w, "%s%s (%s): accepted unsigned (the policy allows it)\n", indent, r.Digest, what)
		case r.Verified:
			for _, s := range r.Signatures {
				tl := "transparency log not checked"
				if s.Tlog {
					tl = "transparency log entry verified"
				}
				printf(w, "%s%s (%s): signed by %s [%s, %s; %s]\n", indent, r.Digest, what, s.Signer, s.Format, s.Where, tl)
			}
		default:
			printf(w, "%s%s (%s): NOT verified: %s\n", indent, r.Digest, what, r.Error)
		}
	}
	line(*rep, "")
	for _, m := range rep.Manifests {
		line(m, "  ")
	}
	if rep.Verified {
		printf(w, "%s: verified\n", rep.Reference)
	}
}
