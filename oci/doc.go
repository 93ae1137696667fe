// Package oci moves extension images through OCI registries and OCI image
// layouts: references, media types and annotations of the sysext artifact
// format (docs/format.md), push, resolve, download, copy and auth. It is
// the only importer of oras-go's registry client.
//
// Example shows the pieces in the order a node uses them: ParseReference
// (a registry repository, or oci:DIR for a layout), Open (an
// oras.GraphTarget), Resolve (an index to this host's manifest, from
// manifests only), then, after the caller verified the manifest's digest
// and checked its Metadata against the host, Download into a file (fetch)
// or into the store's ingest, a Writer (pull).
//
// Invariants:
//   - Every manifest and index read is size-limited (MaxManifestSize) and
//     digest-checked before it is parsed. An index is refused beyond
//     MaxIndexSize bytes (from its descriptor, unread) or MaxIndexEntries
//     entries; each listed digest is read at most once; Resolve reads at
//     most a few candidate manifests unless the index's own signature
//     verified (ResolveOptions.VerifyIndex), Describe at most
//     MaxDescribeBytes of them.
//   - Download hashes while it streams (one pass), resumes a cut transfer
//     with an HTTP Range request, checks size, digest, the filesystem magic
//     and (for our format) that the image's extension-release agrees with
//     the annotations, and only then fsyncs and renames into place; on any
//     failure nothing is left at or next to the target. Into a Writer it
//     fetches only from the Writer's Offset on (one Range request) and
//     leaves committing to the caller; oci never imports the store.
//   - File names taken from annotations are single path components
//     (extension.ValidateFileName): untrusted metadata never escapes the directory.
//   - Loopback registries use plain HTTP; 429 and 5xx answers are retried
//     a bounded number of times with exponential back-off.
//   - Errors are told apart by type, never by their text: ErrNotFound,
//     ErrNoPlatform, ErrNotExtension (errors.Is), *SizeMismatchError, and
//     *CopyError, which says which side of a Copy failed (Op, Origin), as
//     oras-go's does. A registry blob is read with our own GET (Range from
//     an offset), so a refusal is an errcode.ErrorResponse for Explain.
//   - Functions take the narrowest view of a store they need
//     (content.Fetcher, ManifestReader, AttachedLister, CopySource,
//     CopyDestination, oras.Target); Target is all of them.
//
// It does not verify signatures (package verify does) and does not decide
// compatibility with a host (package extension does, from Metadata).
package oci
