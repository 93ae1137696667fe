// Package store is the node's store of extension images and its state: the
// only writer of node state.
//
// Layout under a root (Options.Root, "/" on a running node):
//
//	/var/lib/sysext/store/NAME/NAME-VERSION-ARCH.raw   write-once, read-only images
//	/var/lib/sysext/store/NAME/.ingest-HEX/            an image being downloaded (HEX: its sha256)
//	/var/lib/sysext/state.json                          one small JSON file (atomicfile)
//	/var/lib/sysext/lock                                flock; holder's pid, command, time
//	/var/lib/extensions/NAME.raw -> /var/lib/sysext/store/NAME/FILE   the activation link
//
// # Installers and the ingest lifecycle
//
// An image gets in through an Installer, in three calls, after containerd's
// content store: Ingest → Ingest.Commit → Install. Store is the installer of
// a node (a stored file, a link, a record); Copier is the one for baking an
// OS image (--copy: NAME.raw itself in the extensions directory, no state,
// no lock or file in /var, ingests in temp directories that are not
// resumed). `sysext pull`, from the decision to download to the link,
// enters the store exactly these three times
// (node.TestPullEntersStoreThreeTimes; ExampleStore_Ingest shows them): Ingest
// (is the image stored already, else start or resume .ingest-HEX), which
// oci.Download writes into as an oci.Writer; Commit (verify size and digest,
// fsync, link(2) into NAME/); Install (the foreign check, the intent, the
// link, the record).
//
// An ingest is invisible until Commit: no record names it, gc and Scan see
// no image in it, and systemd-sysext never sees the store directory. Commit
// always ends the ingest: on success its file is in the store and the
// ingest directory is gone; on failure (wrong size or digest, incomplete)
// the ingest is removed. Close without Commit keeps a partial download
// (some bytes, no write error) for the next run and removes anything else.
//
// Resume: the ingest's record (package ingest) holds the expected size and
// digest, the byte ranges written and the hash state. The next Ingest of
// the same image in a later run (after a kill, a cut that outlasted its
// retries, ^C) goes on from there: Download asks the registry for the rest
// with one Range request, and hashing goes on from the saved state.
// Ranges, not only a contiguous prefix, because issue 15's delta downloads
// write at offsets from several sources at once and must resume too; the
// writer is an io.WriterAt and a sequential download resumes at Offset (the
// prefix), a delta will fetch Missing. Hashing stays one pass per byte for
// the bytes that arrive in order (HashAt, in the download's hashing stage);
// Commit reads back only what was not hashed in order, and verifies the
// digest of the whole file before it links it.
//
// Stale ingests are bounded, by these rules: an Ingest of NAME with
// another digest removes NAME's older one at once (superseded: a newer
// version is being pulled), so there is at most one per extension; Open
// removes one nobody has written for MaxIngestAge (7 days); gc removes all
// of them (it holds the lock, so none is in progress); remove takes the
// extension's with it.
//
// # Invariants
//
//   - Every path is resolved inside Root (or VarRoot) as if it were "/"
//     (internal/inroot): a symlink such as ROOT/var -> /elsewhere cannot
//     make the store write outside it.
//   - Writers hold the one cross-process lock (flock) for the whole
//     operation; a second process waits a bounded time and is told who holds it.
//   - An image becomes visible in the store only after it was written
//     into an ingest, hashed, fsynced and its digest checked; it is never
//     modified: link(2) never replaces a stored file, and an ingest whose
//     data has a second link is never written again.
//   - Installing requires a verify.Verified for the manifest digest.
//   - The state file and the activation link are two files, so every change
//     that touches both first records its intent in the state (Entry.Pending),
//     then switches the link, then records the result. Open, under the lock,
//     finishes or undoes a change a crash interrupted (the link decides), and
//     removes temp files (".#" names) a crashed run left; it keeps ingests.
//   - A file or link in an extensions directory that the state does not
//     record is never touched: Install, Rollback and Remove stop and say so
//     (the check runs once, inside them, right before the link changes).
//
// It does not guarantee that systemd-sysext merged anything: that is the
// node package's refresh and check.
package store
