package blob

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/content/memory"
)

func TestRead(t *testing.T) {
	ctx := context.Background()
	s := memory.New()
	body := []byte(`{"schemaVersion":2}`)
	d := content.NewDescriptorFromBytes(ocispec.MediaTypeImageManifest, body)
	if err := s.Push(ctx, d, strings.NewReader(string(body))); err != nil {
		t.Fatal(err)
	}
	if b, err := Read(ctx, s, d, int64(len(body))); err != nil || string(b) != string(body) {
		t.Fatalf("at the limit: %q %v", b, err)
	}
	var tl *TooLargeError
	if _, err := Read(ctx, s, d, int64(len(body))-1); !errors.As(err, &tl) || !strings.Contains(err.Error(), "more than the 18 allowed") {
		t.Fatalf("over the limit: %v", err)
	}
	neg := d
	neg.Size = -1
	if _, err := Read(ctx, s, neg, 100); !errors.As(err, &tl) || !strings.Contains(err.Error(), "negative size") {
		t.Fatalf("negative size: %v", err)
	}
	// A descriptor that lies about the size or digest fails the read.
	short := d
	short.Size--
	if _, err := Read(ctx, s, short, 100); err == nil {
		t.Fatal("a blob longer than its descriptor says was read")
	}
	other := d
	other.Digest = digest.FromString("other")
	if _, err := Read(ctx, s, other, 100); err == nil {
		t.Fatal("a blob of another digest was read")
	}
}
