package main

import (
	"context"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/sysext/sysext/oci"
	"github.com/sysext/sysext/publish"
)

func init() { register("push", newPushCommand) }

// pushOptions are the flags of `sysext push`.
type pushOptions struct {
	registryFlags
	outputFlags
	Append       bool
	Annotations  []string
	Source       string
	NoChunkIndex bool
	pushSigning  // --sign --key (sign.go)
}

func newPushCommand() *cobra.Command {
	var opts pushOptions
	c := &cobra.Command{
		Use:   "push FILE.raw... REF",
		Short: "Push extension images as one multi-architecture OCI artifact",
		Long: `Push one or more extension images of the same extension, one per
architecture, to REF (host[:port]/repo:tag or oci:DIR[:tag]): each file
becomes the one layer of a per-architecture manifest whose annotations carry
its extension-release fields, and the tag points to an index over them.
Each file's metadata is read first; a file whose metadata is broken is
refused before anything is uploaded. --append keeps the architectures
already at the tag that these files do not replace, so per-architecture CI
jobs can publish to one tag; when the index there is signed, --append
refuses unless the new one is signed with the same key (--sign --key) or
--allow-unsigned says to replace it anyway. Prints the pushed index digest.
Each manifest gets a chunk index attached (an OCI 1.1 referrer), from
which nodes holding an older version download only what changed; the tag,
index, manifests and layers are what they would be without it, so every
other consumer pulls the same image (--no-chunk-index leaves it out).
The format is described in docs/format.md. With --sign --key cosign.key
each pushed manifest and the index are signed as cosign signs
(docs/signatures.md); the key is opened before anything is uploaded.`,
		Args: argsUsage(cobra.MinimumNArgs(2)),
		RunE: func(c *cobra.Command, args []string) error {
			return runPush(c.Context(), c, opts, args)
		},
	}
	opts.registryFlags.addFlags(c)
	opts.outputFlags.addFlags(c)
	c.Flags().BoolVar(&opts.Append, "append", false, "add or replace these architectures in the index already at REF")
	c.Flags().StringArrayVar(&opts.Annotations, "annotation", nil, "add `key=value` to every manifest and the index (repeatable)")
	c.Flags().StringVar(&opts.Source, "source", "", "set org.opencontainers.image.source to `URL`")
	c.Flags().BoolVar(&opts.NoChunkIndex, "no-chunk-index", false, "attach no chunk index: nodes then always download whole images")
	opts.pushSigning.addFlags(c)
	return c
}

func runPush(ctx context.Context, c *cobra.Command, opts pushOptions, args []string) error {
	files, refArg := args[:len(args)-1], args[len(args)-1]
	ann := map[string]string{}
	for _, a := range opts.Annotations {
		k, v, ok := strings.Cut(a, "=")
		if !ok || k == "" {
			return usageError("--annotation %q: use key=value", a)
		}
		ann[k] = v
	}
	if opts.AllowUnsigned && !opts.Append {
		return usageError("--allow-unsigned is only used with --append (a push without it replaces the index and its signatures on purpose)")
	}
	if _, err := oci.ParseReference(refArg); err != nil {
		return err // before the key's password is asked for
	}
	signer, err := opts.pushSigning.signer(c) // a wrong password uploads nothing
	if err != nil {
		return err
	}
	cleanup := layoutCleanup(refArg)
	ref, t, err := openReference(ctx, refArg, opts.registryFlags, true)
	if err != nil {
		cleanup()
		return err
	}
	p := newProgress(c, opts.outputFlags)
	res, err := publish.Push(ctx, t, ref, files, publish.Options{
		Push:          oci.PushOptions{Append: opts.Append, Annotations: ann, Source: opts.Source, Progress: p.update, NoChunkIndex: opts.NoChunkIndex},
		Signer:        signer,
		KeyPath:       opts.Key,
		AllowUnsigned: opts.AllowUnsigned,
	})
	if res == nil {
		cleanup()
	}
	if err != nil {
		return err
	}
	var signed []string
	for _, s := range res.Signed {
		signed = append(signed, s.Digest.String())
	}
	out := c.OutOrStdout()
	if opts.JSON {
		type manifestJSON struct {
			File     string `json:"file"`
			Platform string `json:"platform"`
			Digest   string `json:"digest"`
			Layer    string `json:"layer"`
			Size     int64  `json:"size"`
			// ChunkIndex is the chunk index referrer attached ("" with
			// --no-chunk-index).
			ChunkIndex string `json:"chunk_index,omitempty"`
		}
		j := struct {
			Reference string         `json:"reference"`
			Digest    string         `json:"digest"`
			Manifests []manifestJSON `json:"manifests"`
			Kept      []string       `json:"kept_platforms"`
			Signed    []string       `json:"signed,omitempty"`
		}{Reference: ref.String(), Digest: res.Index.Digest.String(), Manifests: []manifestJSON{}, Kept: []string{}, Signed: signed}
		for _, m := range res.Manifests {
			j.Manifests = append(j.Manifests, manifestJSON{m.File, oci.PlatformString(m.Descriptor.Platform), m.Descriptor.Digest.String(), m.Layer.Digest.String(), m.Layer.Size, string(m.ChunkIndex.Digest)})
		}
		for _, k := range res.Kept {
			j.Kept = append(j.Kept, oci.PlatformString(k.Platform))
		}
		return printJSON(out, j)
	}
	if opts.Quiet {
		_, err := fmt.Fprintln(out, res.Index.Digest)
		return err
	}
	for _, m := range res.Manifests {
		fmt.Fprintf(out, "%s: %s %s\n", oci.PlatformString(m.Descriptor.Platform), m.File, m.Descriptor.Digest)
	}
	for _, k := range res.Kept {
		fmt.Fprintf(out, "%s: kept %s\n", oci.PlatformString(k.Platform), k.Digest)
	}
	_, err = fmt.Fprintf(out, "pushed %s@%s\n", ref.WithTag(ref.Tag), res.Index.Digest)
	if err == nil && signer != nil {
		_, err = fmt.Fprintf(out, "signed %d manifests with %s\n", len(signed), signer.Fingerprint())
	}
	return err
}
