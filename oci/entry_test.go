package oci_test

import (
	"testing"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/sysext/sysext/extension"
	"github.com/sysext/sysext/oci"
)

// Entry.Release is what the manifest announces: the metadata's fields and
// the base image's IMAGE_ID/IMAGE_VERSION when valid.
func TestEntryRelease(t *testing.T) {
	e := oci.Entry{
		Kind:     oci.KindSysext,
		Metadata: extension.Metadata{Name: "tool", Version: "1", Arch: "x86-64", ID: "fedora", VersionID: "42"},
		Manifest: &ocispec.Manifest{Annotations: map[string]string{
			oci.AnnotationImageID:      "silverblue",
			oci.AnnotationImageVersion: "bad value\n",
		}},
	}
	rel := e.Release()
	if rel.Get("ID") != "fedora" || rel.Get("VERSION_ID") != "42" || rel.Get(extension.FieldImageID) != "silverblue" {
		t.Fatalf("release %s", rel.Format())
	}
	if _, ok := rel.Lookup(extension.FieldImageVersion); ok {
		t.Fatalf("an invalid IMAGE_VERSION was carried: %s", rel.Format())
	}
	if (&oci.Entry{Metadata: e.Metadata}).Release().Get("ID") != "fedora" {
		t.Fatal("an entry without a manifest")
	}
}
