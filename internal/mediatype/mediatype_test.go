package mediatype

import (
	"testing"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

func TestKinds(t *testing.T) {
	for mt, want := range map[string][2]bool{
		ocispec.MediaTypeImageIndex:    {true, false},
		DockerManifestList:             {true, false},
		ocispec.MediaTypeImageManifest: {false, true},
		DockerManifest:                 {false, true},
		ocispec.MediaTypeImageConfig:   {false, false},
		"":                             {false, false},
	} {
		if got := [2]bool{IsIndex(mt), IsManifest(mt)}; got != want {
			t.Errorf("%q: index, manifest = %v, want %v", mt, got, want)
		}
	}
}
