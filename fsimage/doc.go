// Package fsimage reads extension images without mounting them and without
// root: it recognises the format by its magic (squashfs, EROFS, GPT disk
// image) and reads the extension-release file and unit drop-ins from
// inside. It never writes.
package fsimage
