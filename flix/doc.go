// Package flix makes extensions from container images: the root filesystem
// of an image (Rootfs, and the layer Applier it is built on), programs
// bundled with their own loader and libraries (Flix), and programs wrapped
// to run inside a copy of their root (Flatwrap).
//
// Invariants:
//   - Untrusted layer content never escapes its target directory: names
//     that are absolute or climb with "..", and paths that go through a
//     symlink leading above the root, are refused; every other path is
//     resolved component by component inside the root, as a chroot would,
//     and the last component is replaced, never written through.
//   - Content is verified as it streams (layer digest and diff ID); a
//     mismatch fails the extraction, which happens in a temp directory
//     next to the target that is removed on any error.
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
