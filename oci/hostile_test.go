package oci_test

import (
	"strings"
	"testing"

	"github.com/sysext/sysext/oci"
)

// TestInvisibleCharactersRefused: a manifest whose extension name or
// version, or whose layer title, holds a right-to-left override or a
// zero-width space is not an extension artifact: those names would be
// shown to people as something they are not.
func TestInvisibleCharactersRefused(t *testing.T) {
	base := map[string]string{oci.AnnotationName: "docker", oci.AnnotationVersion: "24.0", oci.AnnotationID: "_any"}
	if _, ok, err := oci.MetadataFromAnnotations(base); !ok || err != nil {
		t.Fatalf("good annotations: %v %v", ok, err)
	}
	for k, v := range map[string]string{
		oci.AnnotationName:    "doc\u202Ekcod",
		oci.AnnotationVersion: "24.0\u200B",
	} {
		a := map[string]string{}
		for kk, vv := range base {
			a[kk] = vv
		}
		a[k] = v
		if _, _, err := oci.MetadataFromAnnotations(a); err == nil || !strings.Contains(err.Error(), `\u20`) {
			t.Errorf("%s=%q: %v, want a refusal showing the character escaped", k, v, err)
		}
	}
	for _, title := range []string{"docker\u202E.raw", "\u200Bdocker.raw", "bad\xff.raw"} {
		if err := oci.SafeFileName(title); err == nil {
			t.Errorf("SafeFileName(%q) = nil", title)
		}
	}
}
