// Package flix makes extensions from container images: the root filesystem
// of an image (rootfs), programs bundled with their own loader and
// libraries (Flix), and programs wrapped to run in their own chroot
// (Flatwrap). Untrusted layer content never escapes its target directory.
package flix
