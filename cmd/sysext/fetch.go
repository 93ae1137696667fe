package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/spf13/cobra"

	"github.com/sysext/sysext/extension"
	"github.com/sysext/sysext/node"
	"github.com/sysext/sysext/oci"
)

func init() { register("fetch", newFetchCommand) }

// fetchOptions are the flags of `sysext fetch`.
type fetchOptions struct {
	registryFlags
	outputFlags
	Dir        string
	Platform   string
	Force      bool
	trustFlags // --key, --policy, keyless flags, --insecure-allow-unsigned
}

func newFetchCommand() *cobra.Command {
	var opts fetchOptions
	c := &cobra.Command{
		Use:   "fetch REF [-o DIR]",
		Short: "Download an extension image for one architecture",
		Long: `Resolve REF (host[:port]/repo:tag, ...@sha256:..., oci:DIR[:tag]), pick the
manifest for the host's architecture (or --platform), and download its image
into DIR as NAME-VERSION-ARCH.raw (or the file name the artifact carries).
The download is hashed while it streams, resumed after a cut connection,
checked (size, digest, squashfs/EROFS/GPT magic, and for sysext artifacts
the image's extension-release against the manifest), fsynced and renamed
into place; on any failure nothing is left in DIR.
Artifacts pushed by Kairos or a plain 'oras push file.raw' are accepted.
The manifest's signature is checked before any image byte is fetched
(--key, keyless flags, --policy, or /etc/sysext/policy.json; see
docs/signatures.md); --insecure-allow-unsigned skips that, with a warning.`,
		Args: argsUsage(cobra.ExactArgs(1)),
		RunE: func(c *cobra.Command, args []string) error {
			return runFetch(c.Context(), c, opts, args)
		},
	}
	opts.registryFlags.addFlags(c)
	opts.outputFlags.addFlags(c)
	c.Flags().StringVarP(&opts.Dir, "output", "o", ".", "download into `DIR`")
	c.Flags().StringVar(&opts.Platform, "platform", "", "architecture to fetch, e.g. linux/arm64 or x86-64 (default: the host's)")
	c.Flags().BoolVarP(&opts.Force, "force", "f", false, "replace an existing file in DIR")
	opts.trustFlags.addFlags(c, true)
	return c
}

func runFetch(ctx context.Context, c *cobra.Command, opts fetchOptions, args []string) error {
	arch := extension.HostArch()
	if opts.Platform != "" {
		a, err := extension.ParseArch(opts.Platform)
		if err != nil {
			return usageError("--platform: %v", err)
		}
		arch = a
	}
	switch fi, err := os.Stat(opts.Dir); {
	case errors.Is(err, fs.ErrNotExist):
		return usageError("-o %s: no such directory: create it first", opts.Dir)
	case err != nil:
		return usageError("-o %v", err)
	case !fi.IsDir():
		return usageError("-o %s is a file: -o names the directory the image is written into", opts.Dir)
	}
	ref, t, err := openReference(ctx, args[0], opts.registryFlags, false)
	if err != nil {
		return err
	}
	// The node's check before a download: the trust policy accepts the
	// chosen manifest before any image byte is fetched.
	v := node.PolicyVerifier{Trust: opts.TrustOptions}
	if err := v.CheckTrust(node.Trust{}); err != nil {
		return err
	}
	opts.trustFlags.warnUnsigned(c)
	r, err := oci.Resolve(ctx, t, ref, arch)
	if err != nil {
		return err
	}
	if _, err := v.Verify(ctx, t, ref, r, node.Trust{}); err != nil {
		return err
	}

	p := newProgress(c, opts.outputFlags)
	d, err := oci.Download(ctx, t, &r.Entry, oci.DownloadOptions{
		Dir:      opts.Dir,
		Replace:  opts.Force,
		Progress: p.fileFunc(r.FileName),
	})
	if errors.Is(err, os.ErrExist) {
		return fmt.Errorf("%w (or pass --force to replace it)", err)
	}
	if err != nil {
		return err
	}
	out := c.OutOrStdout()
	if opts.JSON {
		return printJSON(out, struct {
			Reference string `json:"reference"`
			Manifest  string `json:"manifest"`
			Platform  string `json:"platform"`
			Kind      string `json:"kind"`
			Path      string `json:"path"`
			Digest    string `json:"digest"`
			Size      int64  `json:"size"`
			Resumes   int    `json:"resumes"`
		}{ref.String(), r.Descriptor.Digest.String(), oci.PlatformString(r.Platform), string(r.Kind), d.Path, d.Digest.String(), d.Size, d.Resumes})
	}
	if opts.Quiet {
		_, err := printLine(out, d.Path)
		return err
	}
	_, err = printf(out, "fetched %s (%s, %s) to %s\n", ref, oci.PlatformString(r.Platform), r.Descriptor.Digest, d.Path)
	return err
}
