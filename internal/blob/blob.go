// Package blob reads small blobs (manifests, indexes, configs, signature
// payloads) whole from an OCI store: refused by their descriptor's size
// before a byte is read when over a limit, and checked against the
// descriptor's size and digest as they are read. oci, flix and verify each
// read their metadata through it, with their own limits.
package blob

import (
	"context"
	"fmt"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/content"
)

// TooLargeError is a blob whose descriptor says more than the limit (or a
// negative size): it was not read.
type TooLargeError struct {
	Desc  ocispec.Descriptor
	Limit int64
}

func (e *TooLargeError) Error() string {
	if e.Desc.Size < 0 {
		return fmt.Sprintf("%s has a negative size", e.Desc.Digest)
	}
	return fmt.Sprintf("%s is %d bytes, more than the %d allowed", e.Desc.Digest, e.Desc.Size, e.Limit)
}

// Read reads the blob d from f when its descriptor says at most limit
// bytes; the bytes must match d's size and digest.
func Read(ctx context.Context, f content.Fetcher, d ocispec.Descriptor, limit int64) ([]byte, error) {
	if d.Size < 0 || d.Size > limit {
		return nil, &TooLargeError{Desc: d, Limit: limit}
	}
	if err := d.Digest.Validate(); err != nil {
		return nil, fmt.Errorf("digest %q: %w", d.Digest, err)
	}
	return content.FetchAll(ctx, f, d)
}
