package main

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/sysext/sysext/extension"
	"github.com/sysext/sysext/oci"
)

func init() { register("chunk-index", newChunkIndexCommand) }

// chunkIndexOptions are the flags of `sysext chunk-index`.
type chunkIndexOptions struct {
	registryFlags
	outputFlags
}

func newChunkIndexCommand() *cobra.Command {
	var opts chunkIndexOptions
	c := &cobra.Command{
		Use:   "chunk-index REF",
		Short: "Attach the chunk index delta downloads use to images pushed without one",
		Long: `Give every architecture's image at REF (host[:port]/repo:tag, ...@sha256:...,
oci:DIR[:tag]) the chunk index that 'sysext push' attaches to what it
pushes, so that nodes holding an older version download only what changed
(docs/format.md, "Chunk index"): for images pushed before sysext published
chunk indexes, or by other tools. Each image is read from REF once,
streaming, and checked against its digest; its index is attached as an OCI
1.1 referrer of its manifest (or in the sha256-<hex> fallback tag on
registries without the referrers API). The tag, the index, the manifests
and their signatures stay as they are. An image with a chunk index already
is left alone, so running it twice changes nothing.`,
		Args: argsUsage(cobra.ExactArgs(1)),
		RunE: func(c *cobra.Command, args []string) error {
			return runChunkIndex(c.Context(), c, opts, args)
		},
	}
	opts.registryFlags.addFlags(c)
	opts.outputFlags.addFlags(c)
	return c
}

func runChunkIndex(ctx context.Context, c *cobra.Command, opts chunkIndexOptions, args []string) error {
	ref, t, err := openReference(ctx, args[0], opts.registryFlags, false)
	if err != nil {
		return err
	}
	res, err := oci.AttachChunkIndexes(ctx, t, ref)
	if err != nil {
		return err
	}
	out := c.OutOrStdout()
	if opts.JSON {
		type entryJSON struct {
			Platform   string `json:"platform"`
			Manifest   string `json:"manifest"`
			ChunkIndex string `json:"chunk_index"`
			Chunks     int    `json:"chunks"`
			Attached   bool   `json:"attached"`
		}
		j := []entryJSON{}
		for _, r := range res {
			j = append(j, entryJSON{oci.PlatformString(r.Entry.Platform), r.Entry.Descriptor.Digest.String(), r.Referrer.Digest.String(), r.Chunks, !r.Existed})
		}
		return printJSON(out, j)
	}
	if opts.Quiet {
		return nil
	}
	for _, r := range res {
		what := fmt.Sprintf("attached a chunk index of %d chunks (%s)", r.Chunks, r.Referrer.Digest)
		if r.Existed {
			what = fmt.Sprintf("has a chunk index already (%d chunks)", r.Chunks)
		}
		fmt.Fprintf(out, "%s: %s %s\n", oci.PlatformString(r.Entry.Platform), extension.ShortDigest(r.Entry.Descriptor.Digest.String()), what)
	}
	return nil
}
