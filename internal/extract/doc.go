// Package extract writes untrusted file trees into a directory: archive
// entries (container image layers, and the tar and zip archives recipes
// download) through an Applier, and copies of trees through CopyTree. It is
// the one implementation behind `sysext rootfs`, `build --from-image`,
// recipe downloads, flatwrap's copy of a rootfs and the builder's staging.
//
// Invariants:
//   - Nothing is written outside the target directory. Entry names that
//     are absolute or climb with "..", and paths that go through a symlink
//     leading above the root, are refused; every other path is resolved one
//     component at a time inside the root, as a chroot would (Root), and
//     the last component is replaced, never written through. A hard link's
//     source is resolved the same way and is never a path through a symlink
//     that leaves the root.
//   - Resolution costs a constant number of system calls per entry,
//     whatever the depth of its directory: names are resolved relative to
//     descriptors of the directories reached, and the cache of resolved
//     directories is invalidated only for what a removal touched.
//   - The target directory's own mode and owner belong to the caller: an
//     entry for "./" changes nothing.
//   - A Budget bounds the bytes written (the sizes entries declare, holes
//     included); runs of zeros, and so sparse entries, become holes.
//   - Privileges (set-user-ID/set-group-ID bits, file capabilities) are
//     applied as the archive says when extracting a faithful tree; the
//     copier drops them where the caller's Privileges policy says so.
//
// It does not guarantee anything about a directory other processes write
// to while an extraction runs.
package extract
