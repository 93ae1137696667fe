package oci

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/sysext/sysext/extension"
)

// The sysext artifact format (docs/format.md is the reference).
//
// A tag points to an OCI image index with one image manifest per
// architecture. Each manifest has ArtifactType, the empty config
// (ocispec.DescriptorEmptyJSON) and exactly one layer: the extension image
// file byte for byte, its media type naming the filesystem.
const (
	// ArtifactType is the artifactType of every per-architecture manifest
	// sysext pushes (and of the index).
	ArtifactType = "application/vnd.sysext.extension.v1"

	// MediaTypeSquashfs, MediaTypeEROFS and MediaTypeDisk are the layer
	// media types: the image file unchanged (no tar, no compression).
	MediaTypeSquashfs = "application/vnd.sysext.image.squashfs"
	MediaTypeEROFS    = "application/vnd.sysext.image.erofs"
	MediaTypeDisk     = "application/vnd.sysext.image.gpt" // a GPT disk image (DDI)

	// MediaTypeKairos is the layer (and artifact) type Kairos pushes with
	// `oras push --artifact-type application/vnd.kairos.sysext.raw`.
	MediaTypeKairos = "application/vnd.kairos.sysext.raw"
)

// AnnotationPrefix starts every annotation key of ours.
const AnnotationPrefix = "org.sysext.extension."

// Manifest annotation keys. Each carries one extension-release field, so a
// node decides compatibility from the manifest alone. Absent fields are
// absent keys (never empty values).
const (
	AnnotationName          = AnnotationPrefix + "name"           // NAME of extension-release.NAME
	AnnotationVersion       = AnnotationPrefix + "version"        // SYSEXT_VERSION_ID
	AnnotationID            = AnnotationPrefix + "id"             // ID (an OS ID or _any)
	AnnotationVersionID     = AnnotationPrefix + "version-id"     // VERSION_ID
	AnnotationSysextLevel   = AnnotationPrefix + "sysext-level"   // SYSEXT_LEVEL
	AnnotationArchitecture  = AnnotationPrefix + "architecture"   // ARCHITECTURE, systemd naming (x86-64, arm64, _any)
	AnnotationScope         = AnnotationPrefix + "scope"          // SYSEXT_SCOPE, space separated
	AnnotationReloadManager = AnnotationPrefix + "reload-manager" // "1" when EXTENSION_RELOAD_MANAGER=1
	AnnotationFormat        = AnnotationPrefix + "format"         // squashfs, erofs or gpt
	// AnnotationImageID and AnnotationImageVersion carry IMAGE_ID and
	// IMAGE_VERSION of the extension-release: `build --from-image` records
	// there the base OS image the extension was built on.
	AnnotationImageID      = AnnotationPrefix + "image-id"      // IMAGE_ID
	AnnotationImageVersion = AnnotationPrefix + "image-version" // IMAGE_VERSION
)

// imageAnnotations maps the image identity fields to their keys.
var imageAnnotations = [...]struct{ key, field string }{
	{AnnotationImageID, extension.FieldImageID},
	{AnnotationImageVersion, extension.FieldImageVersion},
}

// ImageAnnotations returns the annotations for the IMAGE_ID and
// IMAGE_VERSION a release assigns. A value os-release(5) does not allow is
// left out (it stays in the image; the annotation is for display and
// policy, and must be safe to print).
func ImageAnnotations(rel *extension.Release) map[string]string {
	a := map[string]string{}
	if rel == nil {
		return a
	}
	for _, ia := range imageAnnotations {
		if v := rel.Get(ia.field); extension.ValidateImageField(ia.field, v) == nil {
			a[ia.key] = v
		}
	}
	return a
}

// Release is the extension-release the manifest announces (KindSysext):
// its metadata's fields and the base OS image `build --from-image`
// recorded (IMAGE_ID/IMAGE_VERSION, valid values only). Nothing of the
// image is read.
func (e *Entry) Release() *extension.Release {
	rel := e.Metadata.Release()
	if e.Manifest != nil {
		image := ImageFromAnnotations(e.Manifest.Annotations)
		for _, k := range image.Keys() {
			rel.Set(k, image.Get(k))
		}
	}
	return rel
}

// ImageFromAnnotations returns the IMAGE_ID and IMAGE_VERSION fields a
// manifest's annotations carry, only valid ones (annotations are
// untrusted).
func ImageFromAnnotations(a map[string]string) *extension.Release {
	rel := &extension.Release{}
	for _, ia := range imageAnnotations {
		if v, ok := a[ia.key]; ok && extension.ValidateImageField(ia.field, v) == nil {
			rel.Set(ia.field, v)
		}
	}
	return rel
}

// Standard OCI annotation keys we set.
const (
	AnnotationTitle   = ocispec.AnnotationTitle   // layer: the file name
	AnnotationOCIVer  = ocispec.AnnotationVersion // manifest: SYSEXT_VERSION_ID
	AnnotationCreated = ocispec.AnnotationCreated // manifest and index: RFC 3339, SOURCE_DATE_EPOCH when set
	AnnotationSource  = ocispec.AnnotationSource  // manifest and index, when given
)

// Limits on untrusted metadata.
const (
	// MaxManifestSize bounds every manifest and index we read (4 MiB, the
	// limit registries commonly enforce).
	MaxManifestSize = 4 << 20
)

// Kind says which producer's convention an artifact follows.
type Kind string

// Kinds of artifact we accept.
const (
	KindSysext Kind = "sysext" // our format: artifactType and annotations present
	KindKairos Kind = "kairos" // one application/vnd.kairos.sysext.raw layer
	KindPlain  Kind = "plain"  // e.g. `oras push file.raw`: one layer of any media type
)

// LayerMediaType returns the layer media type for a filesystem format name
// ("squashfs", "erofs", "gpt").
func LayerMediaType(format string) (string, error) {
	switch format {
	case "squashfs":
		return MediaTypeSquashfs, nil
	case "erofs":
		return MediaTypeEROFS, nil
	case "gpt":
		return MediaTypeDisk, nil
	}
	return "", fmt.Errorf("image format %q has no sysext layer media type: use squashfs, erofs or a GPT disk image", format)
}

// Annotations returns the manifest annotations that carry m (our keys plus
// org.opencontainers.image.version).
func Annotations(m extension.Metadata) map[string]string {
	a := map[string]string{}
	set := func(k, v string) {
		if v != "" {
			a[k] = v
		}
	}
	set(AnnotationName, m.Name)
	set(AnnotationVersion, m.Version)
	set(AnnotationOCIVer, m.Version)
	set(AnnotationID, m.ID)
	set(AnnotationVersionID, m.VersionID)
	set(AnnotationSysextLevel, m.SysextLevel)
	set(AnnotationArchitecture, string(m.Arch))
	if len(m.Scopes) > 0 {
		s := make([]string, len(m.Scopes))
		for i, sc := range m.Scopes {
			s[i] = string(sc)
		}
		a[AnnotationScope] = strings.Join(s, " ")
	}
	if m.ReloadManager {
		a[AnnotationReloadManager] = "1"
	}
	return a
}

// MetadataFromAnnotations decodes and validates the metadata carried by a
// manifest's annotations. ok is false when the manifest carries none of our
// keys (a foreign artifact); err is set when they are present but invalid.
func MetadataFromAnnotations(a map[string]string) (m extension.Metadata, ok bool, err error) {
	if _, ok := a[AnnotationName]; !ok {
		return extension.Metadata{}, false, nil
	}
	// Going through Release reuses the domain core's validation.
	r := &extension.Release{}
	for k, f := range map[string]string{
		AnnotationID:            extension.FieldID,
		AnnotationVersionID:     extension.FieldVersionID,
		AnnotationSysextLevel:   extension.FieldSysextLevel,
		AnnotationArchitecture:  extension.FieldArchitecture,
		AnnotationScope:         extension.FieldSysextScope,
		AnnotationReloadManager: extension.FieldExtensionReloadManager,
		AnnotationVersion:       extension.FieldSysextVersionID,
	} {
		if v, ok := a[k]; ok {
			r.Set(f, v)
		}
	}
	m, err = extension.MetadataFromRelease(a[AnnotationName], r)
	if err != nil {
		return extension.Metadata{}, true, fmt.Errorf("manifest annotations: %w", err)
	}
	if m.Version != "" {
		if err := extension.ValidateVersion(m.Version); err != nil {
			return extension.Metadata{}, true, fmt.Errorf("manifest annotation %s: %w", AnnotationVersion, err)
		}
	}
	if m.ID == "" {
		return extension.Metadata{}, true, fmt.Errorf("manifest annotation %s is missing: the extension has no ID", AnnotationID)
	}
	return m, true, nil
}

// Platform returns the OCI platform for an extension architecture: linux
// plus the OCI architecture and variant. ARCHITECTURE=_any (or unset) has
// no platform: such an index entry serves every architecture.
func Platform(a extension.Arch) *ocispec.Platform {
	arch, variant := a.OCIPlatform()
	if arch == "" {
		return nil
	}
	return &ocispec.Platform{OS: "linux", Architecture: arch, Variant: variant}
}

// PlatformString formats p as os/arch[/variant], "any" for nil.
func PlatformString(p *ocispec.Platform) string {
	if p == nil {
		return "any"
	}
	s := p.OS + "/" + p.Architecture
	if p.Variant != "" {
		s += "/" + p.Variant
	}
	return s
}

// SafeFileName checks a file name taken from untrusted metadata (the title
// annotation): one path component, not hidden, no '/', no "..".
func SafeFileName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("file name is empty")
	case strings.ContainsAny(name, "/\\\x00"):
		return fmt.Errorf("file name %q contains a path separator", name)
	case name == "." || name == ".." || strings.Contains(name, ".."):
		return fmt.Errorf("file name %q contains \"..\"", name)
	case strings.HasPrefix(name, "."):
		return fmt.Errorf("file name %q starts with '.'", name)
	case len(name) > 255:
		return fmt.Errorf("file name %.20q... is longer than 255 bytes", name)
	}
	if !utf8.ValidString(name) {
		return fmt.Errorf("file name %q is not valid UTF-8", name)
	}
	for _, c := range name {
		if c < 0x20 || c == 0x7f {
			return fmt.Errorf("file name %q contains a control character", name)
		}
		// Shown to people (inspect, fetch): only characters shown as
		// themselves, no U+202E or zero-width ones.
		if c != ' ' && !unicode.IsPrint(c) {
			return fmt.Errorf("file name %q contains %U, a character that is not shown as itself", name, c)
		}
	}
	return nil
}
