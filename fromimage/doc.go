// Package fromimage turns what a container build added to its base image
// under /usr and /opt into the tree of a system extension (`sysext build
// --from-image REF --base REF`), and what it added under /etc into a
// confext (WriteConfext, through builder's confext kind). BindToBaseImage
// records the base's IMAGE_ID/IMAGE_VERSION in the extension-release.
//
// Invariants: when the image's first layers are exactly the base's, only
// the layers above them are downloaded (and, when the base's os-release is
// asked for, the base's layers from the top down to the one holding it);
// otherwise both filesystems are compared file by file, and only when
// their os-release agree. Deletions of base files under usr/ or opt/ (and
// etc/ with a confext) are refused unless ignored explicitly, since an
// extension cannot express them. Layers go through internal/extract's
// Applier (fetched and checked by flix.ApplyLayers), so no entry escapes
// its directory, every layer is digest-checked and what they unpack to is
// bounded (Options.MaxSize). Work directories are temp directories next to
// the tree, removed on return; images are written atomically.
package fromimage
