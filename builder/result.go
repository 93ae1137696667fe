package builder

import "github.com/sysext/sysext/extension"

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
}
