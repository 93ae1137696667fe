package ocitest

import (
	"bytes"
	"context"
	"io"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/content"
)

// CorruptFetcher serves the blob Victim with one bit flipped in its middle
// and every other blob as Fetcher has it: a store that lies about one
// digest, for tests that the reader refuses it.
type CorruptFetcher struct {
	content.Fetcher
	Victim digest.Digest
}

func (c CorruptFetcher) Fetch(ctx context.Context, desc ocispec.Descriptor) (io.ReadCloser, error) {
	rc, err := c.Fetcher.Fetch(ctx, desc)
	if err != nil || desc.Digest != c.Victim {
		return rc, err
	}
	b, _ := io.ReadAll(rc)
	rc.Close()
	b[len(b)/2] ^= 1
	return io.NopCloser(bytes.NewReader(b)), nil
}
