package oci

import (
	"encoding/hex"
	"fmt"
	"strings"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/sysext/sysext/extension"
	"github.com/sysext/sysext/fsimage"
	"github.com/sysext/sysext/verity"
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
	// AnnotationCompression names an EROFS image's compressors, space
	// separated (lz4, lzma, deflate, zstd; none when uncompressed): the
	// node's kernel must read each, so the preflight checks it before
	// the download. Absent for squashfs and disk images.
	AnnotationCompression = AnnotationPrefix + "compression"
	// AnnotationImageID and AnnotationImageVersion carry IMAGE_ID and
	// IMAGE_VERSION of the extension-release: `build --from-image` records
	// there the base OS image the extension was built on.
	AnnotationImageID      = AnnotationPrefix + "image-id"      // IMAGE_ID
	AnnotationImageVersion = AnnotationPrefix + "image-version" // IMAGE_VERSION
	// AnnotationVerityRootHash and AnnotationVerityCertificate describe a
	// disk image (format gpt): the dm-verity root hash of its root
	// partition (lowercase hex) and the SHA-256 (lowercase hex) of the
	// X.509 certificate whose key signed that root hash, absent for an
	// unsigned image. The cosign signature over the manifest covers them,
	// so one chain runs from the publisher's key to the kernel.
	AnnotationVerityRootHash    = AnnotationPrefix + "verity-root-hash"
	AnnotationVerityCertificate = AnnotationPrefix + "verity-certificate-sha256"
)

// VerityFromAnnotations returns the verity root hash and certificate
// fingerprint a manifest names ("" when absent); malformed values are an
// error (annotations are untrusted).
func VerityFromAnnotations(a map[string]string) (rootHash, certSHA256 string, err error) {
	rootHash, certSHA256 = a[AnnotationVerityRootHash], a[AnnotationVerityCertificate]
	if rootHash != "" {
		if b, err := hex.DecodeString(rootHash); err != nil || len(b) < 32 || len(b) > 64 || strings.ToLower(rootHash) != rootHash {
			return "", "", fmt.Errorf("manifest annotation %s: %.80q is not a lowercase hex root hash", AnnotationVerityRootHash, rootHash)
		}
	}
	if certSHA256 != "" && !verity.ValidFingerprint(certSHA256) {
		return "", "", fmt.Errorf("manifest annotation %s: %.80q is not a lowercase hex SHA-256", AnnotationVerityCertificate, certSHA256)
	}
	if certSHA256 != "" && rootHash == "" {
		return "", "", fmt.Errorf("manifest annotation %s without %s", AnnotationVerityCertificate, AnnotationVerityRootHash)
	}
	return rootHash, certSHA256, nil
}

// VerityAnnotations returns the annotations for a disk image.
func VerityAnnotations(d *fsimage.DDI) map[string]string {
	a := map[string]string{}
	if d == nil || d.RootHash == "" {
		return a
	}
	a[AnnotationVerityRootHash] = d.RootHash
	if fp := SignerFingerprint(d); fp != "" {
		a[AnnotationVerityCertificate] = fp
	}
	return a
}

// SignerFingerprint is the SHA-256 of the certificate a disk image says
// signed it: the one its signature carries, else its
// certificateFingerprint. "" for an unsigned image. Only what the image
// says: whether that certificate is trusted is the node's policy's call.
func SignerFingerprint(d *fsimage.DDI) string {
	if d == nil || d.Signature == nil {
		return ""
	}
	if c := d.Signature.EmbeddedSigner(); c != nil {
		return verity.Fingerprint(c)
	}
	return d.Signature.CertificateFingerprint
}

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
