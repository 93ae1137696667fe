// Package delta holds the rules of delta downloads (issue 15,
// docs/format.md "Chunk index"): the content-defined chunker that cuts an
// image into chunks, the chunk index a publisher attaches to each image
// (its binary format, and what a node checks before it believes one), and
// the plan that says which chunks of a new image a node takes from images
// it holds and which byte ranges of the new image it fetches.
//
// A publisher and a node must cut the same bytes at the same places: the
// chunker (FastCDC with a gear table derived from SHA-256, normalized
// chunking, 16/64/256 KiB) is part of the format, version-tagged in every
// index.
//
// Invariants: it imports only the standard library and does no I/O other
// than reading an io.Reader it is given. Parse never trusts the bytes it
// is handed: a chunk index is accepted only when its lengths are within
// the chunker's bounds and add up to the image size it claims, and
// Index.Check ties it to the layer the node is about to download.
//
// It does not guarantee that an accepted index describes the image: only
// the layer digest, checked over the whole assembled file, does. A wrong
// index costs a failed delta and a full download, never a wrong image.
package delta
