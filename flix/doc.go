// Package flix makes extensions from container images: the root filesystem
// of an image (Rootfs, and ApplyLayers, which fetches, checks and
// decompresses layers for an internal/extract Applier), programs bundled
// with their own loader and libraries (Flix), and programs wrapped to run
// inside a copy of their root (Flatwrap).
//
// Invariants:
//   - Untrusted layer content never escapes its target directory (the
//     rules are internal/extract's: names that are absolute or climb with
//     "..", and paths that go through a symlink leading above the root,
//     are refused; every other path, hard link sources included, is
//     resolved inside the root as a chroot would, and the last component
//     is replaced, never written through). The target's own mode is 0755.
//     What the layers unpack to is bounded (RootfsOptions.MaxSize).
//   - Content is verified as it streams (layer digest and diff ID); a
//     mismatch fails the extraction, which happens in a temp directory
//     next to the target that is removed on any error.
//   - Flix and Flatwrap put no set-user-ID/set-group-ID bit or file
//     capability in the image but on the files named in
//     Options.KeepPrivileges (paths in the rootfs).
//   - Reading a rootfs (Flix, Flatwrap) resolves its symlinks inside it,
//     so nothing is taken from the host.
//   - Flix and Flatwrap stage their tree in a temp directory and write the
//     image only through builder.Build: on any error no image is written.
//
// It reads images through oras-go's content.Fetcher, so any store works
// (a registry or an OCI layout through package oci, memory in tests). It
// does not guarantee that a wrapped program finds what it needs on the
// host (/etc by default comes from the host).
package flix
