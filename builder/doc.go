// Package builder turns a directory tree into a systemd-sysext image
// (squashfs or EROFS, or a Discoverable Disk Image with a dm-verity
// protected and optionally signed root partition: ddi.go) with its
// extension-release metadata and Upholds= drop-ins, reproducibly; with Options.Kind KindConfext, an etc/ tree into
// a systemd-confext image (metadata under etc/extension-release.d). The
// tool reads a view of the input (mksquashfs pseudo files; for EROFS an
// overlay in a private mount namespace, or a hard-linked staging tree),
// never the input modified; the image is written atomically, and the
// network is never touched.
//
// Invariants: the same tree and SOURCE_DATE_EPOCH give the same bytes; a
// tree that systemd-sysext would not merge as meant (top level other than
// usr/ and opt/, no usr/, a contradicting extension-release file, a device
// node) is refused before any work; no file of the image has a
// set-user-ID/set-group-ID bit or file capabilities unless
// Options.KeepPrivileges names it (the image is all-root; see
// privileges.go); on every error or cancellation no temp file,
// staging directory or output is left; an image is renamed into place only
// after its metadata was read back and matched. See docs/building.md.
package builder
