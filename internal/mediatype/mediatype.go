// Package mediatype says what kind of manifest a media type names. It is
// the one place that knows a Docker manifest list is an index and a Docker
// image manifest a manifest, so oci (resolve, copy, push), flix (container
// images), verify (signing a tree) and the command agree on both.
package mediatype

import ocispec "github.com/opencontainers/image-spec/specs-go/v1"

// Docker's media types (Docker Image Manifest V2, Schema 2), which
// registries still serve for container images.
const (
	DockerManifestList = "application/vnd.docker.distribution.manifest.list.v2+json"
	DockerManifest     = "application/vnd.docker.distribution.manifest.v2+json"
)

// IsIndex reports whether mt is an image index: an OCI index or a Docker
// manifest list.
func IsIndex(mt string) bool {
	return mt == ocispec.MediaTypeImageIndex || mt == DockerManifestList
}

// IsManifest reports whether mt is an image manifest, OCI or Docker.
func IsManifest(mt string) bool {
	return mt == ocispec.MediaTypeImageManifest || mt == DockerManifest
}
