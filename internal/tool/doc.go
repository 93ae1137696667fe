// Package tool runs the outside programs sysext relies on (mksquashfs,
// mkfs.erofs, unsquashfs, fsck.erofs): a missing one is a one-line error
// naming the Debian package to install, a failing one an error carrying the
// last lines it printed, and every run stops with its context.
package tool
