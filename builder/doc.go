// Package builder turns a directory tree into a systemd-sysext image
// (squashfs or EROFS) with its extension-release metadata and Upholds=
// drop-ins, reproducibly. It stages a view of the input and never modifies
// it, writes the image atomically, and never touches the network.
package builder
