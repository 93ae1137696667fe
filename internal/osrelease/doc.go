// Package osrelease reads os-release(5) files from disk: a tree's or the
// host's os-release, and the extension-release files in a tree. It is the
// one reader of those files outside an image (fsimage reads them inside
// one): each read is bounded by extension.MaxReleaseSize (internal/smallfile),
// a path inside an OS tree is resolved inside it (internal/inroot), and the
// syntax is extension.ParseRelease's, so every caller accepts and refuses
// the same files. An error names the file.
package osrelease
