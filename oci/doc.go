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
// or into the store's ingest, a Writer (pull); FetchRanges fetches only
// some byte ranges of a layer (delta downloads).
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
//     fetches only what the Writer lacks (from its Offset on, or the
//     missing parts a stopped parallel download left) and leaves
//     committing to the caller; oci never imports the store.
//   - A large download from a registry whose single connection is what
//     limits it (not the disk, not the hash) goes on in parallel Range
//     requests, ramping 2, 4, 8 connections while each step pays
//     (parallel.go); bytes are still hashed once, in order.
//   - FetchRanges sends single-range GETs only (object stores refuse
//     several ranges in one), at most Concurrency at once, resumes a cut
//     within its range, follows a blob redirect once and sends later ranges
//     straight to its target without credentials (back to the registry on
//     401/403), and says ErrRangeUnsupported when a Range is answered with
//     the whole blob. Through mirrors it asks the sources in order, a
//     failed one handing what it did not write to the next; a mirror's
//     whole answer to its first range (a cold pull-through cache) is read
//     once, to its end, and serves every range (mirrorTarget.ranges).
//   - File names taken from annotations are single path components
//     (extension.ValidateFileName): untrusted metadata never escapes the directory.
//   - Loopback registries use plain HTTP. Retrying lives in one place,
//     RetryPolicy: 408, 429 and 5xx answers, timeouts and cut transfers
//     are asked again a bounded number of times, after exponential
//     back-off with full jitter (a fleet never retries in lock-step) and
//     never before a 429's or 503's Retry-After (seconds or a date, up to
//     a bound).
//   - With a registry configuration (containers-registries.conf(5),
//     LoadRegistries), a reference is read through its mirrors, then its
//     origin: content named by digest from any of them, checked against
//     the digest (wrong bytes make the next source be asked, never get
//     used); what a tag points to only from those pull-from-mirror
//     allows. Signatures are verified for the reference as named, so a
//     mirror can make a pull fail, never make it succeed with other
//     content.
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
