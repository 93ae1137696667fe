package builder

import (
	"github.com/sysext/sysext/extension"
	"github.com/sysext/sysext/verity"
)

// Result describes a written image.
type Result struct {
	Path     string             `json:"path"`
	Format   ImageFormat        `json:"format"`
	Size     int64              `json:"size"`
	Digest   string             `json:"digest,omitempty"` // "sha256:<hex>" of the file
	Meta     extension.Metadata `json:"-"`
	Release  *extension.Release `json:"-"` // the extension-release file written
	Upholds  []string           `json:"upholds,omitempty"`
	Warnings []string           `json:"warnings,omitempty"`
	// Compression is, for EROFS, the compressors the image's superblock
	// names (nil: uncompressed); see fsimage.ErofsNeeds for the kernel.
	Compression []string `json:"compression,omitempty"`

	// A DDI's root partition filesystem, root hash, signer and how it was
	// built (DDIByRepart or DDIByVeritysetup).
	Filesystem ImageFormat      `json:"filesystem,omitempty"`
	RootHash   string           `json:"rootHash,omitempty"`
	Signer     *verity.CertInfo `json:"signer,omitempty"`
	DDIBuilder string           `json:"ddiBuilder,omitempty"`
}
