package oci_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/sysext/sysext/extension"
	"github.com/sysext/sysext/oci"
	"github.com/sysext/sysext/oci/ocitest"
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
		if err := extension.ValidateFileName(title); err == nil {
			t.Errorf("ValidateFileName(%q) = nil", title)
		}
	}
}

// manifestCounter counts manifest requests (GET and HEAD) at the registry.
type manifestCounter struct{ n atomic.Int64 }

func (c *manifestCounter) fault() ocitest.Fault {
	return func(w http.ResponseWriter, r *http.Request, next http.Handler) bool {
		if ocitest.Manifests(r) {
			c.n.Add(1)
		}
		return false
	}
}

// TestHugeIndexRefused: the report's 20 000-entry, 3 MB index is refused
// by Resolve (pull, fetch) and Describe (inspect) from its descriptor,
// before it is read; a dense one under the size cap (5 000 entries) after
// reading it, with none of its manifests fetched.
func TestHugeIndexRefused(t *testing.T) {
	var c manifestCounter
	reg := ocitest.NewOlareg(t, c.fault())
	ctx := context.Background()
	for _, tc := range []struct {
		entries  int
		requests int64 // resolve the tag (+ read the index)
		why      string
	}{
		{20000, 1, "more than the 1048576 an extension artifact's index may have"},
		{5000, 2, "lists 5000 manifests, more than the 256"},
	} {
		tg, ref := reg.Open(t, fmt.Sprintf("ext/huge:%d", tc.entries))
		d := ocitest.HugeIndex(t, tg, ref.Tag, tc.entries)
		t.Logf("%d entries: an index of %d bytes", tc.entries, d.Size)
		for name, read := range map[string]func() error{
			"Resolve":  func() error { _, err := oci.Resolve(ctx, tg, ref, ""); return err },
			"Describe": func() error { _, err := oci.Describe(ctx, tg, ref); return err },
		} {
			c.n.Store(0)
			err := read()
			if err == nil || !strings.Contains(err.Error(), tc.why) || !errors.Is(err, oci.ErrNotExtension) {
				t.Errorf("%s of %d entries: %v, want %q", name, tc.entries, err, tc.why)
			}
			if n := c.n.Load(); n > tc.requests {
				t.Errorf("%s of %d entries made %d manifest requests, want at most %d", name, tc.entries, n, tc.requests)
			}
		}
	}
}

// TestIndexFanOutBounded: under the cap, an index still cannot make a
// reader fetch many manifests: each digest is read once, Resolve reads a
// few candidates unless the index's own signature verifies, and Describe
// reads each distinct manifest once.
func TestIndexFanOutBounded(t *testing.T) {
	var c manifestCounter
	reg := ocitest.NewOlareg(t, c.fault())
	tg, ref := reg.Open(t, "ext/fan:1")
	ctx := context.Background()
	// 255 entries naming one foreign manifest, then the host's build.
	foreign := ocitest.SysextManifest(t, tg, ocitest.OtherArch(), "1.0")
	host := ocitest.SysextManifest(t, tg, extension.HostArch(), "1.0")
	var same []ocispec.Descriptor
	for range 255 {
		same = append(same, foreign)
	}
	ocitest.Index(t, tg, "1", append(same, host))
	c.n.Store(0)
	r, err := oci.Resolve(ctx, tg, ref, "")
	if err != nil || r.Descriptor.Digest != host.Digest {
		t.Fatalf("Resolve through repeated entries: %v", err)
	}
	if n := c.n.Load(); n > 4 {
		t.Errorf("Resolve made %d manifest requests for 2 distinct manifests", n)
	}
	c.n.Store(0)
	a, err := oci.Describe(ctx, tg, ref)
	if err != nil || len(a.Entries) != 2 {
		t.Fatalf("Describe: %v, %d entries", err, len(a.Entries))
	}
	if n := c.n.Load(); n > 4 {
		t.Errorf("Describe made %d manifest requests for 2 distinct manifests", n)
	}

	// 40 distinct manifests for another architecture without platform,
	// then the host's: Resolve stops after a few unless the index verifies.
	var distinct []ocispec.Descriptor
	for i := range 40 {
		distinct = append(distinct, ocitest.SysextManifest(t, tg, ocitest.OtherArch(), fmt.Sprintf("1.%d", i)))
	}
	ocitest.Index(t, tg, "2", append(distinct, host))
	ref2 := reg.Reference(t, "ext/fan:2")
	c.n.Store(0)
	_, err = oci.Resolve(ctx, tg, ref2, "")
	if err == nil || !strings.Contains(err.Error(), "more than 4 manifests that could be for") {
		t.Errorf("Resolve of 41 candidates without verification: %v", err)
	}
	if n := c.n.Load(); n > 6 {
		t.Errorf("Resolve made %d manifest requests before refusing", n)
	}
	unsigned := oci.ResolveOptions{VerifyIndex: func(context.Context, ocispec.Descriptor) error { return errors.New("not signed") }}
	c.n.Store(0)
	if _, err := oci.ResolveWith(ctx, tg, ref2, "", unsigned); err == nil || !strings.Contains(err.Error(), "not signed") {
		t.Errorf("Resolve of an unsigned index: %v", err)
	}
	if n := c.n.Load(); n > 6 {
		t.Errorf("Resolve of an unsigned index made %d manifest requests", n)
	}
	signed := oci.ResolveOptions{VerifyIndex: func(context.Context, ocispec.Descriptor) error { return nil }}
	if r, err := oci.ResolveWith(ctx, tg, ref2, "", signed); err != nil || r.Descriptor.Digest != host.Digest {
		t.Errorf("Resolve of a verified index: %v", err)
	}
}

// BenchmarkHugeIndex: what the 20 000-entry, 3 MB index of the report
// costs Resolve (pull, fetch) and Describe (inspect) now, side by side
// with the floor on this machine: Resolve of an ordinary two-platform
// index on the same registry. Reported: manifest requests per operation.
//
//	go test -run '^$' -bench HugeIndex -benchtime 20x ./oci/
func BenchmarkHugeIndex(b *testing.B) {
	var c manifestCounter
	reg := ocitest.NewOlareg(b, c.fault())
	tg, ref := reg.Open(b, "ext/huge:1")
	ocitest.HugeIndex(b, tg, "1", 20000)
	ocitest.HugeIndex(b, tg, "dense", 5000)
	dense := reg.Reference(b, "ext/huge:dense")
	ocitest.Index(b, tg, "small", []ocispec.Descriptor{
		ocitest.SysextManifest(b, tg, ocitest.OtherArch(), "1.0"),
		ocitest.SysextManifest(b, tg, extension.HostArch(), "1.0"),
	})
	small := reg.Reference(b, "ext/huge:small")
	ctx := context.Background()
	run := func(b *testing.B, f func() error, wantErr bool) {
		c.n.Store(0)
		b.ResetTimer()
		for range b.N {
			if err := f(); (err != nil) != wantErr {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(c.n.Load())/float64(b.N), "manifest-requests/op")
	}
	b.Run("floor-resolve-2-entry-index", func(b *testing.B) {
		run(b, func() error { _, err := oci.Resolve(ctx, tg, small, ""); return err }, false)
	})
	b.Run("resolve-20000-entry-index", func(b *testing.B) {
		run(b, func() error { _, err := oci.Resolve(ctx, tg, ref, ""); return err }, true)
	})
	b.Run("describe-20000-entry-index", func(b *testing.B) {
		run(b, func() error { _, err := oci.Describe(ctx, tg, ref); return err }, true)
	})
	b.Run("resolve-5000-entry-index-under-1MiB", func(b *testing.B) {
		run(b, func() error { _, err := oci.Resolve(ctx, tg, dense, ""); return err }, true)
	})
}
