package oci

import (
	"context"
	"fmt"
	"strings"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/sysext/sysext/extension"
	"github.com/sysext/sysext/fsimage"
)

// The stream keeps enough of the image's start for every magic number.
const _ = uint(headSize - fsimage.HeadSize)

// checkImage reads the image's own metadata and, for our format, checks it
// against the manifest's annotations. It returns nil Info when the image
// cannot be read without mounting (a GPT disk image).
func checkImage(ctx context.Context, path string, format fsimage.Format, e *Entry) (*fsimage.Info, error) {
	info, err := openImage(ctx, path, format)
	if err != nil {
		return nil, err
	}
	if info == nil || e.Kind != KindSysext {
		return info, nil
	}
	if err := MetadataAgrees(e.Metadata, info); err != nil {
		return info, err
	}
	if err := imageAgrees(e.Manifest, info.Release); err != nil {
		return info, err
	}
	return info, verityAgrees(e.Manifest, info)
}

// verityAgrees checks the verity annotations against the image: the root
// hash its (checked) tree has, and the certificate its signature names.
func verityAgrees(m *ocispec.Manifest, info *fsimage.Info) error {
	if m == nil {
		return nil
	}
	root, cert, err := VerityFromAnnotations(m.Annotations)
	if err != nil {
		return err
	}
	d := info.DDI
	switch {
	case root == "":
		return nil
	case d == nil || d.RootHash == "":
		return fmt.Errorf("the manifest names verity root hash %s but the image is no disk image with a verity partition", root)
	case d.RootHash != root:
		return fmt.Errorf("the image's dm-verity root hash is %s, not the %s the manifest names: refusing it", d.RootHash, root)
	case cert == "":
		return nil
	case d.Signature == nil:
		return fmt.Errorf("the manifest names verity certificate %s but the image has no readable signature partition", cert)
	case SignerFingerprint(d) != cert:
		return fmt.Errorf("the image's verity signature names certificate %s, not the %s the manifest names: refusing it", SignerFingerprint(d), cert)
	}
	return nil
}

// imageAgrees checks the image-id/image-version annotations (when the
// manifest has them) against the image's IMAGE_ID/IMAGE_VERSION.
func imageAgrees(m *ocispec.Manifest, rel *extension.Release) error {
	if m == nil || rel == nil {
		return nil
	}
	ann := ImageFromAnnotations(m.Annotations)
	for _, k := range ann.Keys() {
		if got := rel.Get(k); got != ann.Get(k) {
			return fmt.Errorf("the image's extension-release disagrees with the manifest annotations: %s is %q in the image and %q in the manifest", k, got, ann.Get(k))
		}
	}
	return nil
}

// MetadataAgrees checks that the extension-release inside an image says
// what the manifest annotations said (name, version, ID, VERSION_ID,
// SYSEXT_LEVEL, ARCHITECTURE, SYSEXT_SCOPE, EXTENSION_RELOAD_MANAGER), so a
// node's compatibility decision made from the manifest holds for the file.
func MetadataAgrees(ann extension.Metadata, info *fsimage.Info) error {
	img := info.Meta
	if info.Name != "" {
		img.Name = info.Name
	}
	diff := func(field, a, b string) error {
		return fmt.Errorf("the image's extension-release disagrees with the manifest annotations: %s is %q in the image and %q in the manifest", field, b, a)
	}
	switch {
	case ann.Name != img.Name:
		return diff("the extension name", ann.Name, img.Name)
	case ann.Version != img.Version:
		return diff("SYSEXT_VERSION_ID", ann.Version, img.Version)
	case ann.ID != img.ID:
		return diff("ID", ann.ID, img.ID)
	case ann.VersionID != img.VersionID:
		return diff("VERSION_ID", ann.VersionID, img.VersionID)
	case ann.SysextLevel != img.SysextLevel:
		return diff("SYSEXT_LEVEL", ann.SysextLevel, img.SysextLevel)
	case ann.Arch != img.Arch:
		return diff("ARCHITECTURE", string(ann.Arch), string(img.Arch))
	case scopes(ann.Scopes) != scopes(img.Scopes):
		return diff("SYSEXT_SCOPE", scopes(ann.Scopes), scopes(img.Scopes))
	case ann.ReloadManager != img.ReloadManager:
		return diff("EXTENSION_RELOAD_MANAGER", fmt.Sprint(ann.ReloadManager), fmt.Sprint(img.ReloadManager))
	}
	return nil
}

func scopes(s []extension.Scope) string {
	out := make([]string, len(s))
	for i, x := range s {
		out[i] = string(x)
	}
	return strings.Join(out, " ")
}
