package oci_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2"

	"github.com/sysext/sysext/delta"
	"github.com/sysext/sysext/extension"
	"github.com/sysext/sysext/internal/testenv"
	"github.com/sysext/sysext/oci"
	"github.com/sysext/sysext/oci/ocitest"
)

// epoch is the created time of the tests' pushes: the same files give
// the same digests.
var epoch = time.Unix(1700000000, 0)

// stores are the three kinds of store a chunk index travels through: a
// registry with the referrers API (olareg), one without (distribution:
// the sha256-<hex> fallback tag), and an OCI layout.
func stores(t *testing.T) map[string]func(repo string) (oci.Target, oci.Reference) {
	return map[string]func(string) (oci.Target, oci.Reference){
		"olareg": func(repo string) (oci.Target, oci.Reference) { return ocitest.NewOlareg(t).Open(t, repo) },
		"distribution": func(repo string) (oci.Target, oci.Reference) {
			return ocitest.StartDistribution(t).Open(t, repo)
		},
		"layout": func(repo string) (oci.Target, oci.Reference) {
			_, tag, _ := strings.Cut(repo, ":")
			ref := ocitest.NewLayout(t, tag)
			o := ocitest.TestOptions()
			o.CreateLayout = true
			tg, err := oci.Open(context.Background(), ref, o)
			if err != nil {
				t.Fatal(err)
			}
			return tg, ref
		},
	}
}

// Push attaches a chunk index to each manifest and changes nothing else:
// the same files pushed without it give the same index and manifests, so
// the tag serves every other consumer as before. The index found again is
// the file's.
func TestPushAttachesChunkIndex(t *testing.T) {
	ctx := context.Background()
	amd := ocitest.Squashfs(t, ocitest.Meta("hello", "1.0", "x86-64"), bytes.Repeat([]byte("amd "), 100000))
	arm := ocitest.Squashfs(t, ocitest.Meta("hello", "1.0", "arm64"), []byte("arm"))
	for name, open := range stores(t) {
		t.Run(name, func(t *testing.T) {
			tg, ref := open("ext/hello:1.0")
			plainT, plainRef := open("ext/plain:1.0")
			res, err := oci.Push(ctx, tg, ref, []string{amd, arm}, oci.PushOptions{Created: epoch})
			if err != nil {
				t.Fatal(err)
			}
			plain, err := oci.Push(ctx, plainT, plainRef, []string{amd, arm}, oci.PushOptions{NoChunkIndex: true, Created: epoch})
			if err != nil {
				t.Fatal(err)
			}
			if res.Index.Digest != plain.Index.Digest {
				t.Fatalf("the index changed with a chunk index: %s, without %s", res.Index.Digest, plain.Index.Digest)
			}
			for i, m := range res.Manifests {
				if m.Descriptor.Digest != plain.Manifests[i].Descriptor.Digest || plain.Manifests[i].ChunkIndex.Digest != "" {
					t.Fatalf("%s: manifest %s with a chunk index, %s without", m.File, m.Descriptor.Digest, plain.Manifests[i].Descriptor.Digest)
				}
				r, err := oci.Resolve(ctx, tg, ref, m.Metadata.Arch)
				if err != nil {
					t.Fatal(err)
				}
				ix, n, err := oci.FindChunkIndex(ctx, tg, &r.Entry)
				if err != nil {
					t.Fatalf("%s: %v", m.File, err)
				}
				want, wantBytes, err := oci.ChunkIndexFile(ctx, m.File)
				if err != nil {
					t.Fatal(err)
				}
				if ix.DigestString() != m.Layer.Digest.String() || len(ix.Chunks) != len(want.Chunks) || n < int64(len(wantBytes)) {
					t.Fatalf("%s: found an index of %d chunks for %s (read %d bytes), want %d chunks", m.File, len(ix.Chunks), ix.DigestString(), n, len(want.Chunks))
				}
				if _, _, err := oci.FindChunkIndex(ctx, plainT, &oci.Entry{Descriptor: plain.Manifests[i].Descriptor, Layer: m.Layer}); !errors.Is(err, oci.ErrNoChunkIndex) {
					t.Fatalf("without a chunk index: %v", err)
				}
			}
			// Pushing again attaches no second index.
			if _, err := oci.Push(ctx, tg, ref, []string{amd, arm}, oci.PushOptions{Created: epoch}); err != nil {
				t.Fatal(err)
			}
			if rs := referrers(t, tg, res.Manifests[0].Descriptor); len(rs) != 1 || rs[0].ArtifactType != oci.ArtifactTypeChunkIndex {
				t.Fatalf("referrers after a second push: %v", rs)
			}
		})
	}
}

// AttachChunkIndexes gives an artifact pushed without chunk indexes the
// same indexes push would have attached, leaves the tag alone, and adds
// nothing on a second run.
func TestAttachChunkIndexes(t *testing.T) {
	ctx := context.Background()
	amd := ocitest.Squashfs(t, ocitest.Meta("hello", "1.0", "x86-64"), bytes.Repeat([]byte("amd "), 100000))
	arm := ocitest.Squashfs(t, ocitest.Meta("hello", "1.0", "arm64"), []byte("arm"))
	for name, open := range stores(t) {
		t.Run(name, func(t *testing.T) {
			tg, ref := open("ext/hello:1.0")
			withT, withRef := open("ext/with:1.0")
			res, err := oci.Push(ctx, tg, ref, []string{amd, arm}, oci.PushOptions{NoChunkIndex: true, Created: epoch})
			if err != nil {
				t.Fatal(err)
			}
			with, err := oci.Push(ctx, withT, withRef, []string{amd, arm}, oci.PushOptions{Created: epoch})
			if err != nil {
				t.Fatal(err)
			}
			got, err := oci.AttachChunkIndexes(ctx, tg, ref)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != 2 {
				t.Fatalf("attached %d", len(got))
			}
			for i, a := range got {
				if a.Existed || a.Referrer.Digest != with.Manifests[i].ChunkIndex.Digest {
					t.Fatalf("%s: attached %s, push attaches %s", oci.PlatformString(a.Entry.Platform), a.Referrer.Digest, with.Manifests[i].ChunkIndex.Digest)
				}
			}
			if d, err := tg.Resolve(ctx, "1.0"); err != nil || d.Digest != res.Index.Digest {
				t.Fatalf("the tag moved: %s %v", d.Digest, err)
			}
			again, err := oci.AttachChunkIndexes(ctx, tg, ref)
			if err != nil || len(again) != 2 || !again[0].Existed || !again[1].Existed {
				t.Fatalf("second run: %+v %v", again, err)
			}
		})
	}
}

// Other consumers see the tag as before: oras pulls the same file, crane
// reads the same index; oras discover lists the chunk index as a plain
// OCI referrer (on distribution, through the fallback tag).
func TestChunkIndexInterop(t *testing.T) {
	testenv.RequireTool(t, "oras")
	testenv.RequireTool(t, "crane")
	ctx := context.Background()
	reg := ocitest.StartDistribution(t)
	amd := ocitest.Squashfs(t, ocitest.Meta("hello", "1.0", "x86-64"), bytes.Repeat([]byte("amd "), 100000))
	tg, ref := reg.Open(t, "ext/hello:1.0")
	res, err := oci.Push(ctx, tg, ref, []string{amd}, oci.PushOptions{Created: epoch})
	if err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	runTool(t, out, "oras", "pull", "--plain-http", "--platform", "linux/amd64", ref.String(), "-o", out)
	sameFile(t, amd, filepath.Join(out, "hello-1.0-x86-64.raw"))
	ents, _ := os.ReadDir(out)
	if len(ents) != 1 {
		t.Fatalf("oras pull wrote %d files", len(ents))
	}
	idx := runTool(t, out, "crane", "manifest", "--insecure", ref.String())
	if digest.FromString(strings.TrimSpace(idx)) != res.Index.Digest && digest.FromString(idx) != res.Index.Digest {
		t.Fatalf("crane reads another index:\n%s", idx)
	}
	// crane gets the layer: the image, byte for byte.
	blob, err := exec.Command(testenv.RequireTool(t, "crane"), "blob", "--insecure", reg.Ref("ext/hello@"+res.Manifests[0].Layer.Digest.String())).Output()
	if err != nil {
		t.Fatalf("crane blob: %v", err)
	}
	if want, _ := os.ReadFile(amd); !bytes.Equal(blob, want) {
		t.Fatalf("crane blob: %d bytes, not the image", len(blob))
	}
	disc := runTool(t, out, "oras", "discover", "--plain-http", "--format", "json", reg.Ref("ext/hello@"+res.Manifests[0].Descriptor.Digest.String()))
	var d struct {
		Manifests []ocispec.Descriptor `json:"manifests"`
		Referrers []ocispec.Descriptor `json:"referrers"`
	}
	if err := json.Unmarshal([]byte(disc), &d); err != nil {
		t.Fatalf("oras discover: %v\n%s", err, disc)
	}
	found := append(d.Manifests, d.Referrers...)
	if len(found) != 1 || found[0].ArtifactType != oci.ArtifactTypeChunkIndex || found[0].Digest != res.Manifests[0].ChunkIndex.Digest {
		t.Fatalf("oras discover: %s", disc)
	}
}

// FindChunkIndex believes a referrer only when it is what push attaches,
// for this manifest and this layer; each crafted one is refused with
// delta.ErrInvalid, and the node then downloads the whole image.
func TestFindChunkIndexRefuses(t *testing.T) {
	ctx := context.Background()
	img := ocitest.Squashfs(t, ocitest.Meta("hello", "1.0", "x86-64"), bytes.Repeat([]byte("hello "), 50000))
	other := ocitest.Squashfs(t, ocitest.Meta("hello", "1.1", "x86-64"), []byte("other"))
	_, good, err := oci.ChunkIndexFile(ctx, img)
	if err != nil {
		t.Fatal(err)
	}
	_, otherIdx, err := oci.ChunkIndexFile(ctx, other)
	if err != nil {
		t.Fatal(err)
	}
	cases := map[string]func(t *testing.T, tg oci.Target, subject ocispec.Descriptor){
		"another image's index": func(t *testing.T, tg oci.Target, subject ocispec.Descriptor) {
			attach(t, tg, subject, oci.MediaTypeChunkIndex, otherIdx, nil)
		},
		"a garbled index": func(t *testing.T, tg oci.Target, subject ocispec.Descriptor) {
			b := bytes.Clone(good)
			b[65] ^= 1 // the first chunk's length: 256 bytes more or less
			attach(t, tg, subject, oci.MediaTypeChunkIndex, b, nil)
		},
		"another layer type": func(t *testing.T, tg oci.Target, subject ocispec.Descriptor) {
			attach(t, tg, subject, "application/octet-stream", good, nil)
		},
		"too large": func(t *testing.T, tg oci.Target, subject ocispec.Descriptor) {
			attach(t, tg, subject, oci.MediaTypeChunkIndex, good, func(m *ocispec.Manifest) { m.Layers[0].Size = delta.MaxIndexSize + 1 })
		},
		"two layers": func(t *testing.T, tg oci.Target, subject ocispec.Descriptor) {
			attach(t, tg, subject, oci.MediaTypeChunkIndex, good, func(m *ocispec.Manifest) { m.Layers = append(m.Layers, m.Layers[0]) })
		},
	}
	for name, craft := range cases {
		t.Run(name, func(t *testing.T) {
			tg, ref := ocitest.NewOlareg(t).Open(t, "ext/hello:1.0")
			res, err := oci.Push(ctx, tg, ref, []string{img}, oci.PushOptions{NoChunkIndex: true, Created: epoch})
			if err != nil {
				t.Fatal(err)
			}
			craft(t, tg, res.Manifests[0].Descriptor)
			r, err := oci.Resolve(ctx, tg, ref, "x86-64")
			if err != nil {
				t.Fatal(err)
			}
			if _, _, err := oci.FindChunkIndex(ctx, tg, &r.Entry); !errors.Is(err, delta.ErrInvalid) {
				t.Fatalf("FindChunkIndex: %v", err)
			}
		})
	}

	// A registry that serves other bytes for the index blob: refused by
	// its digest.
	t.Run("corrupted in transit", func(t *testing.T) {
		reg := ocitest.NewOlareg(t, ocitest.RewriteBody(func(r *http.Request) bool {
			return ocitest.Blobs(r) && strings.HasSuffix(r.URL.Path, digest.FromBytes(good).String())
		}, -1, func(b []byte) []byte { b[len(b)-1] ^= 1; return b }))
		tg, ref := reg.Open(t, "ext/hello:1.0")
		if _, err := oci.Push(ctx, tg, ref, []string{img}, oci.PushOptions{Created: epoch}); err != nil {
			t.Fatal(err)
		}
		r, err := oci.Resolve(ctx, tg, ref, extension.Arch("x86-64"))
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := oci.FindChunkIndex(ctx, tg, &r.Entry); err == nil || errors.Is(err, oci.ErrNoChunkIndex) {
			t.Fatalf("a corrupted index blob: %v", err)
		}
	})
}

// attach pushes a chunk index referrer of subject with the given layer
// media type and bytes, edit changing its manifest first.
func attach(t *testing.T, tg oci.Target, subject ocispec.Descriptor, mediaType string, b []byte, edit func(*ocispec.Manifest)) {
	t.Helper()
	ctx := context.Background()
	ld, err := oras.PushBytes(ctx, tg, mediaType, b)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := oras.PushBytes(ctx, tg, ocispec.MediaTypeEmptyJSON, []byte("{}")); err != nil && !strings.Contains(err.Error(), "exists") {
		t.Fatal(err)
	}
	cfg := ocispec.DescriptorEmptyJSON
	cfg.Data = nil
	sub := ocispec.Descriptor{MediaType: subject.MediaType, Digest: subject.Digest, Size: subject.Size}
	m := ocispec.Manifest{MediaType: ocispec.MediaTypeImageManifest, ArtifactType: oci.ArtifactTypeChunkIndex, Config: cfg, Layers: []ocispec.Descriptor{ld}, Subject: &sub}
	m.SchemaVersion = 2
	if edit != nil {
		edit(&m)
	}
	body, _ := json.Marshal(m)
	if _, err := oras.PushBytes(ctx, tg, ocispec.MediaTypeImageManifest, body); err != nil {
		t.Fatal(err)
	}
}

// The referrers API and the fallback tag are asked at once, and neither
// request outlives FindChunkIndex: on a registry without the API whose
// referrers endpoint hangs, the tag finds the index and the hung request
// is cancelled; when the caller gives up while both hang, both end.
func TestFindChunkIndexAsksBothWays(t *testing.T) {
	ctx := context.Background()
	img := ocitest.Squashfs(t, ocitest.Meta("hello", "1.0", "x86-64"), bytes.Repeat([]byte("hello "), 50000))
	// hang holds the requests match picks until the client cancels them,
	// and says when each arrives and ends.
	// (once on is set: the push asks the referrers API too).
	var on atomic.Bool
	hang := func(match ocitest.Match, arrived, ended chan<- string) ocitest.Fault {
		return func(w http.ResponseWriter, r *http.Request, _ http.Handler) bool {
			if !on.Load() || !match(r) {
				return false
			}
			arrived <- r.URL.Path
			<-r.Context().Done()
			ended <- r.URL.Path
			return true
		}
	}
	api := func(r *http.Request) bool { return strings.Contains(r.URL.Path, "/referrers/") }
	tag := func(r *http.Request) bool { return strings.Contains(r.URL.Path, "/manifests/sha256-") }
	setup := func(t *testing.T, faults ...ocitest.Fault) (oci.Target, *oci.Resolved) {
		reg := ocitest.Proxy(t, ocitest.StartDistribution(t), faults...)
		tg, ref := reg.Open(t, "ext/hello:1.0")
		if _, err := oci.Push(ctx, tg, ref, []string{img}, oci.PushOptions{Created: epoch}); err != nil {
			t.Fatal(err)
		}
		r, err := oci.Resolve(ctx, tg, ref, "x86-64")
		if err != nil {
			t.Fatal(err)
		}
		on.Store(true)
		t.Cleanup(func() { on.Store(false) })
		// A node's own target: it knows nothing of the registry yet (the
		// push learned it has no referrers API).
		tg, _ = reg.Open(t, "ext/hello:1.0")
		return tg, r
	}
	// ended waits for n hung requests to be cancelled by the client.
	ended := func(t *testing.T, ch <-chan string, n int) {
		for range n {
			select {
			case <-ch:
			case <-time.After(30 * time.Second):
				t.Fatal("a hung request was never cancelled: its goroutine outlived FindChunkIndex")
			}
		}
	}

	t.Run("the tag answers, the API hangs", func(t *testing.T) {
		arrived, end := make(chan string, 4), make(chan string, 4)
		tg, r := setup(t, hang(api, arrived, end))
		ix, _, err := oci.FindChunkIndex(ctx, tg, &r.Entry)
		if err != nil {
			t.Fatal(err)
		}
		if ix.DigestString() != r.Entry.Layer.Digest.String() {
			t.Fatalf("index for %s, want %s", ix.DigestString(), r.Entry.Layer.Digest)
		}
		noLookupLeft(t)
		if len(arrived) != 1 {
			t.Fatalf("%d referrers API requests, want 1", len(arrived))
		}
		ended(t, end, 1)
	})

	t.Run("the caller gives up", func(t *testing.T) {
		arrived, end := make(chan string, 4), make(chan string, 4)
		tg, r := setup(t, hang(func(r *http.Request) bool { return api(r) || tag(r) }, arrived, end))
		cctx, cancel := context.WithCancel(ctx)
		defer cancel()
		go func() {
			<-arrived
			<-arrived
			cancel()
		}()
		_, _, err := oci.FindChunkIndex(cctx, tg, &r.Entry)
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("FindChunkIndex: %v, want the cancel", err)
		}
		noLookupLeft(t)
		ended(t, end, 2)
	})
}

// noLookupLeft fails when a goroutine is still inside a referrers lookup.
func noLookupLeft(t *testing.T) {
	t.Helper()
	buf := make([]byte, 1<<20)
	stacks := string(buf[:runtime.Stack(buf, true)])
	for _, fn := range []string{"oci.listChunkIndexReferrers", "oci.chunkIndexReferrersByTag", "oci.readChunkIndex"} {
		if strings.Contains(stacks, fn) {
			t.Fatalf("a goroutine is still in %s after FindChunkIndex returned:\n%s", fn, stacks)
		}
	}
}

// A chunk index lookup started from an index's entry, before the manifest
// is read: used for the manifest it was started for, checked against that
// manifest's layer once it is known; for another manifest, or stopped, or
// when the caller gives up, nothing it found is used and nothing of it is
// left running.
func TestStartChunkIndex(t *testing.T) {
	ctx := context.Background()
	imgA := ocitest.Squashfs(t, ocitest.Meta("hello", "1.0", "x86-64"), bytes.Repeat([]byte("hello "), 50000))
	imgB := ocitest.Squashfs(t, ocitest.Meta("hello", "2.0", "x86-64"), bytes.Repeat([]byte("world "), 50000))
	var on atomic.Bool
	var hang atomic.Value // of ocitest.Match
	arrived, ended := make(chan string, 8), make(chan string, 8)
	reg := ocitest.Proxy(t, ocitest.StartDistribution(t), func(w http.ResponseWriter, r *http.Request, _ http.Handler) bool {
		m, _ := hang.Load().(ocitest.Match)
		if !on.Load() || m == nil || !m(r) {
			return false
		}
		arrived <- r.URL.Path
		<-r.Context().Done()
		ended <- r.URL.Path
		return true
	})
	resolve := func(tag, img string) *oci.Resolved {
		tg, ref := reg.Open(t, "ext/hello:"+tag)
		if _, err := oci.Push(ctx, tg, ref, []string{img}, oci.PushOptions{Created: epoch}); err != nil {
			t.Fatal(err)
		}
		r, err := oci.Resolve(ctx, tg, ref, "x86-64")
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	a, b := resolve("a", imgA), resolve("b", imgB)
	on.Store(true)
	tg, _ := reg.Open(t, "ext/hello:a")
	waitEnded := func(t *testing.T, n int) {
		t.Helper()
		for range n {
			select {
			case <-ended:
			case <-time.After(30 * time.Second):
				t.Fatal("a hung request was never cancelled: the lookup outlived Stop")
			}
		}
	}

	t.Run("for its manifest", func(t *testing.T) {
		l := oci.StartChunkIndex(ctx, tg, a.Descriptor)
		ix, n, err := l.Result(ctx, &a.Entry)
		if err != nil {
			t.Fatal(err)
		}
		if ix.DigestString() != a.Layer.Digest.String() || n == 0 {
			t.Fatalf("index for %s (%d bytes read), want %s", ix.DigestString(), n, a.Layer.Digest)
		}
		l.Stop()
		noLookupLeft(t)
	})
	t.Run("for another manifest", func(t *testing.T) {
		l := oci.StartChunkIndex(ctx, tg, a.Descriptor)
		ix, _, err := l.Result(ctx, &b.Entry)
		if !errors.Is(err, oci.ErrOtherManifest) || ix != nil {
			t.Fatalf("Result for another manifest: %v, %v; want ErrOtherManifest", ix, err)
		}
		noLookupLeft(t)
	})
	t.Run("its digest with another layer", func(t *testing.T) {
		// The index found is checked against the layer of the entry given,
		// as FindChunkIndex checks it (an entry cannot have another layer
		// under the same digest once verified: this shows the check runs).
		e := a.Entry
		e.Layer = b.Layer
		l := oci.StartChunkIndex(ctx, tg, a.Descriptor)
		if ix, _, err := l.Result(ctx, &e); err == nil || ix != nil {
			t.Fatalf("an index for layer %s was accepted for layer %s", a.Layer.Digest, b.Layer.Digest)
		}
		noLookupLeft(t)
	})
	t.Run("hung, stopped", func(t *testing.T) {
		hang.Store(ocitest.Match(func(r *http.Request) bool {
			return strings.Contains(r.URL.Path, "/referrers/") || strings.Contains(r.URL.Path, "/manifests/sha256-")
		}))
		defer hang.Store(ocitest.Match(nil))
		l := oci.StartChunkIndex(ctx, tg, a.Descriptor)
		<-arrived
		<-arrived
		l.Stop()
		noLookupLeft(t)
		waitEnded(t, 2)
		if ix, _, err := l.Result(ctx, &a.Entry); err == nil || ix != nil {
			t.Fatalf("a stopped lookup gave %v, %v", ix, err)
		}
	})
	t.Run("hung, the caller gives up", func(t *testing.T) {
		hang.Store(ocitest.Match(func(r *http.Request) bool { return strings.Contains(r.URL.Path, "/blobs/") }))
		defer hang.Store(ocitest.Match(nil))
		l := oci.StartChunkIndex(ctx, tg, a.Descriptor)
		cctx, cancel := context.WithCancel(ctx)
		go func() {
			<-arrived // the index blob, named by the listing
			cancel()
		}()
		if _, _, err := l.Result(cctx, &a.Entry); !errors.Is(err, context.Canceled) {
			t.Fatalf("Result: %v, want the cancel", err)
		}
		noLookupLeft(t)
		waitEnded(t, 1)
	})
}
