// Package ingest writes one blob of known size and digest into a file: at
// offsets, from any source, hashed in one pass where the bytes arrive in
// order, flushed to the disk as it goes, and verified whole before anyone
// may use it; with a record, resumable after a crash.
//
// An ingest directory (Open) holds two files:
//
//	data   the blob's bytes at their offsets, its space reserved up front
//	log    the record: a header (size, digest, boot), then one line per
//	       write ({"w":[off,len]}), per fdatasync ({"sync":K}: the first K
//	       writes are durable) and per hashed chunk ({"h":N,"state":...}:
//	       the sha256 state after N bytes), each line checksummed
//
// Why a log of ranges, not only a contiguous prefix: a sequential download
// needs only the prefix, but the delta downloads of issue 15 write at
// offsets from several sources at once (chunks found locally, parallel HTTP
// ranges), and a killed delta must resume without losing what arrived out
// of order. Missing lists what is still to fetch; Offset is the prefix a
// sequential download goes on from.
//
// Why a saved hash state: hashing stays one pass per byte across a crash.
// The state is saved with the offset it covers; Open restores the newest
// one whose bytes are all trusted and hashes from the file only the written
// bytes after it (the hashing stage runs a few MiB behind the writing one).
// Bytes that arrive out of order are hashed by Sum from the file, once.
//
// What is trusted after a crash: a write is recorded after pwrite returned,
// and a "sync" line only after fdatasync returned, so synced writes are on
// the disk. Unsynced writes are in the page cache when only the process
// died, which the same boot_id proves; after a reboot only synced writes
// count (at most one flush interval, 16-256 MiB, is fetched again). Open then makes what
// it trusts durable and rewrites the record compactly (atomicfile), so a
// record never claims more than the disk holds.
//
// Invariants: the data file is written only below its size; a data file
// with a second link (committed by the caller with link(2)) is never
// written again: Open starts afresh instead. A torn record line ends the
// record; nothing after it is believed.
//
// It does not decide where ingests live, when a stale one is removed, or
// how a finished one is committed: that is the caller's (store).
package ingest
