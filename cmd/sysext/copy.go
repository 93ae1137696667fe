package main

import (
	"context"
	"fmt"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/spf13/cobra"

	"github.com/sysext/sysext/oci"
)

func init() { register("copy", newCopyCommand) }

// copyOptions are the flags of `sysext copy`.
type copyOptions struct {
	registryFlags
	outputFlags
	SkipReferrers bool
}

func newCopyCommand() *cobra.Command {
	var opts copyOptions
	c := &cobra.Command{
		Use:   "copy SRC DST",
		Short: "Copy an extension artifact with every platform and its signatures",
		Long: `Copy what SRC points to (host[:port]/repo:tag, ...@sha256:..., oci:DIR[:tag])
to DST, registry to registry, registry to OCI layout (air gap) and back:
the whole index with every platform, and the signatures and other referrers
of the index and of each manifest (OCI 1.1 referrers or the sha256-<hex>
fallback tag, and cosign's sha256-<hex>.sig/.att/.sbom tags). Blobs DST
already has are not copied again. An OCI layout DST is created if missing.`,
		Args: argsUsage(cobra.ExactArgs(2)),
		RunE: func(c *cobra.Command, args []string) error {
			return runCopy(c.Context(), c, opts, args)
		},
	}
	opts.registryFlags.addFlags(c)
	opts.outputFlags.addFlags(c)
	c.Flags().BoolVar(&opts.SkipReferrers, "skip-referrers", false, "copy only the artifact, without signatures and other referrers")
	return c
}

func runCopy(ctx context.Context, c *cobra.Command, opts copyOptions, args []string) error {
	srcRef, src, err := openReference(ctx, args[0], opts.registryFlags, false)
	if err != nil {
		return err
	}
	if _, err := oci.ParseReference(args[1]); err != nil {
		return err
	}
	cleanup := layoutCleanup(args[1])
	dstRef, dst, err := openReference(ctx, args[1], opts.registryFlags, true)
	if err != nil {
		cleanup()
		return err
	}
	co := oci.CopyOptions{SkipReferrers: opts.SkipReferrers}
	if !opts.Quiet && !opts.JSON {
		w := c.ErrOrStderr()
		co.OnCopied = func(d ocispec.Descriptor) {
			fmt.Fprintf(w, "copied %s %s (%s)\n", d.MediaType, d.Digest, humanSize(d.Size))
		}
	}
	res, err := oci.Copy(ctx, src, srcRef, dst, dstRef, co)
	if err != nil {
		cleanup()
		return err
	}
	out := c.OutOrStdout()
	if opts.JSON {
		refs := []string{}
		for _, r := range res.Referrers {
			refs = append(refs, r.Digest.String())
		}
		tags := append([]string{}, res.Tags...)
		return printJSON(out, struct {
			Source      string   `json:"source"`
			Destination string   `json:"destination"`
			Digest      string   `json:"digest"`
			Referrers   []string `json:"referrers"`
			Tags        []string `json:"tags"`
		}{srcRef.String(), dstRef.String(), res.Root.Digest.String(), refs, tags})
	}
	if opts.Quiet {
		_, err := fmt.Fprintln(out, res.Root.Digest)
		return err
	}
	_, err = fmt.Fprintf(out, "copied %s to %s@%s (%d referrers, %d cosign tags)\n", srcRef, dstRef.WithTag(dstRef.Tag), res.Root.Digest, len(res.Referrers), len(res.Tags))
	return err
}
