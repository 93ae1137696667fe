package node

import (
	"bytes"
	"context"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/sysext/sysext/delta"
	"github.com/sysext/sysext/oci"
	"github.com/sysext/sysext/store"
)

// A pull that downloads a whole image keeps the chunk index its publisher
// attached (looked for beside the download), so the next update takes its
// chunks without cutting the stored image first.

// keptIndex is the chunk index the store keeps next to NAME's FILE (nil
// when none).
func keptIndex(t *testing.T, root, name, file string) []byte {
	t.Helper()
	s, err := store.Open(context.Background(), storeOpts(root))
	must(t, err)
	defer s.Close()
	b, err := s.ReadChunkIndex(name, file)
	must(t, err)
	return b
}

// publishedIndex is the chunk index blob attached to pushed's manifest.
func publishedIndex(t *testing.T, reg *deltaReg, repoTag string, pushed *oci.PushResult) []byte {
	t.Helper()
	tg, _ := reg.Open(t, repoTag)
	ix, _, err := oci.FindChunkIndex(context.Background(), tg, &oci.Entry{Descriptor: pushed.Manifests[0].Descriptor, Layer: pushed.Manifests[0].Layer})
	must(t, err)
	b, err := ix.MarshalBinary()
	must(t, err)
	return b
}

// indexFirst holds the image's layer back until the chunk index lookup
// was answered (its referrer manifest and index blob sent), so that what
// the node keeps does not depend on which of them ends first on a fast
// loopback. When the download is about to start and no lookup was asked
// for (a node that looks for none), the layer is let through at once.
type indexFirst struct {
	layer, manifest, blob string
	mu                    sync.Mutex
	asked                 bool
	served                int
	open                  chan struct{}
	once                  sync.Once
}

func newIndexFirst(pushed *oci.PushResult) *indexFirst {
	m := pushed.Manifests[0]
	blob, _, _ := strings.Cut(m.ChunkIndex.Annotations[oci.AnnotationChunkIndexBlob], " ")
	return &indexFirst{layer: m.Layer.Digest.String(), manifest: m.ChunkIndex.Digest.String(), blob: blob, open: make(chan struct{})}
}

func (g *indexFirst) release() { g.once.Do(func() { close(g.open) }) }

// download is the node's "download" hook.
func (g *indexFirst) download(point string) {
	if point != "download" {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.asked {
		g.release()
	}
}

func (g *indexFirst) fault(w http.ResponseWriter, r *http.Request, next http.Handler) bool {
	switch {
	case referrersAPI(r) || referrersTag(r):
		g.mu.Lock()
		g.asked = true
		g.mu.Unlock()
	case strings.HasSuffix(r.URL.Path, "/"+g.manifest) || strings.HasSuffix(r.URL.Path, "/"+g.blob):
		next.ServeHTTP(w, r)
		g.mu.Lock()
		g.served++
		if g.served == 2 {
			g.release()
		}
		g.mu.Unlock()
		return true
	case strings.HasSuffix(r.URL.Path, "/"+g.layer):
		select {
		case <-g.open:
		case <-r.Context().Done():
		}
	}
	return false
}

// The first pull, into an empty store, keeps v1's published index byte
// for byte; the update to v2 then cuts no stored image (the store writes
// one chunk index, v2's, not v1's as well) and takes v1's chunks.
func TestFullPullKeepsChunkIndex(t *testing.T) {
	reg := newDeltaReg(t)
	ctx := context.Background()
	shared := blob(4<<20, 31)
	v1 := extImage(t, "app", "1", map[string][]byte{"lib/shared": shared, "lib/changed": blob(1<<20, 32)})
	v2 := extImage(t, "app", "2", map[string][]byte{"lib/shared": shared, "lib/changed": blob(1<<20, 33)})
	ref := reg.Ref("ext/app:stable")
	pushed := push(t, ref, v1)
	g := newIndexFirst(pushed)
	reg.misbehave(g.fault)
	root := nodeRoot(t, debianRelease)
	var writes atomic.Int64
	o := testNode(root).opts
	o.Hook = func(p string) {
		g.download(p)
		if p == "chunk-index" {
			writes.Add(1)
		}
	}
	r, err := New(o).Pull(ctx, PullRequest{Ref: ref})
	if err != nil {
		t.Fatal(err)
	}
	if r.Action != "pulled" || r.Reused != 0 {
		t.Fatalf("first pull: %+v", r)
	}
	checkActive(t, root, "app", v1)
	file := filepath.Base(v1)
	if got, want := keptIndex(t, root, "app", file), publishedIndex(t, reg, "ext/app:stable", pushed); !bytes.Equal(got, want) {
		t.Fatalf("after the first pull the store keeps %d bytes of chunk index for %s, want the %d published", len(got), file, len(want))
	}
	if n := writes.Load(); n != 1 {
		t.Fatalf("the first pull wrote %d chunk indexes, want 1", n)
	}

	push(t, ref, v2)
	reg.misbehave(nil)
	writes.Store(0)
	var log bytes.Buffer
	o.Log = &log
	r, err = New(o).Pull(ctx, PullRequest{Ref: ref})
	if err != nil {
		t.Fatalf("%v\n%s", err, log.String())
	}
	checkActive(t, root, "app", v2)
	if r.Action != "updated" || r.Reused < int64(len(shared))-2*delta.MaxSize {
		t.Fatalf("update: %+v\n%s", r, log.String())
	}
	if n := writes.Load(); n != 1 {
		t.Fatalf("the update wrote %d chunk indexes, want 1 (v2's): v1 was cut again\n%s", n, log.String())
	}
}

// With no chunk index published the first pull downloads the image, keeps
// nothing next to it and says nothing is wrong.
func TestFullPullNoChunkIndex(t *testing.T) {
	reg := newDeltaReg(t)
	v1 := extImage(t, "app", "1", map[string][]byte{"lib/shared": blob(1<<20, 41)})
	ref := reg.Ref("ext/app:stable")
	pushWith(t, ref, oci.PushOptions{NoChunkIndex: true}, v1)
	root := nodeRoot(t, debianRelease)
	var log bytes.Buffer
	r, err := logNode(root, &log).Pull(context.Background(), PullRequest{Ref: ref})
	if err != nil {
		t.Fatalf("%v\n%s", err, log.String())
	}
	if r.Action != "pulled" {
		t.Fatalf("%+v", r)
	}
	checkActive(t, root, "app", v1)
	if b := keptIndex(t, root, "app", filepath.Base(v1)); b != nil {
		t.Fatalf("%d bytes of chunk index kept with none published", len(b))
	}
	if files := storedFiles(t, filepath.Join(root, "var/lib/sysext/store/app")); len(files) != 1 {
		t.Fatalf("store: %v", files)
	}
}

// --no-delta on an empty store asks for no chunk index and keeps none.
func TestFullPullNoDelta(t *testing.T) {
	reg := newDeltaReg(t)
	v1 := extImage(t, "app", "1", map[string][]byte{"lib/shared": blob(1<<20, 51)})
	ref := reg.Ref("ext/app:stable")
	push(t, ref, v1)
	var referrers atomic.Int64
	reg.misbehave(func(w http.ResponseWriter, r *http.Request, next http.Handler) bool {
		if referrersAPI(r) || referrersTag(r) {
			referrers.Add(1)
		}
		return false
	})
	root := nodeRoot(t, debianRelease)
	o := testNode(root).opts
	o.NoDelta = true
	if _, err := New(o).Pull(context.Background(), PullRequest{Ref: ref}); err != nil {
		t.Fatal(err)
	}
	checkActive(t, root, "app", v1)
	reg.served.Settle()
	if n := referrers.Load(); n != 0 || reg.served.Bytes() != size(t, v1) {
		t.Fatalf("--no-delta: %d referrer requests, sent %d of %d", n, reg.served.Bytes(), size(t, v1))
	}
	if b := keptIndex(t, root, "app", filepath.Base(v1)); b != nil {
		t.Fatalf("--no-delta kept %d bytes of chunk index", len(b))
	}
}

// A published index that names v1's layer rightly but lies about its
// chunks (each chunk carries its neighbour's sha256) is kept by the first
// pull; the update that takes chunks by it reads v1's bytes, finds they
// do not match v2's index, drops the kept index and downloads v2 whole:
// the result is v2 byte for byte.
func TestKeptChunkIndexLies(t *testing.T) {
	reg := newDeltaReg(t)
	ctx := context.Background()
	shared := blob(4<<20, 61)
	v1 := extImage(t, "app", "1", map[string][]byte{"lib/shared": shared, "lib/changed": blob(1<<20, 62)})
	v2 := extImage(t, "app", "2", map[string][]byte{"lib/shared": shared, "lib/changed": blob(1<<20, 63)})
	ref := reg.Ref("ext/app:stable")
	pushed := pushWith(t, ref, oci.PushOptions{NoChunkIndex: true}, v1)
	ix, _, err := oci.ChunkIndexFile(ctx, v1)
	must(t, err)
	first := ix.Chunks[0].Sum
	for i := range ix.Chunks {
		if i+1 < len(ix.Chunks) {
			ix.Chunks[i].Sum = ix.Chunks[i+1].Sum
		} else {
			ix.Chunks[i].Sum = first
		}
	}
	lie, err := ix.MarshalBinary()
	must(t, err)
	tg, _ := reg.Open(t, "ext/app:stable")
	desc, err := oci.PushChunkIndex(ctx, tg, pushed.Manifests[0].Descriptor, lie, "2026-01-01T00:00:00Z")
	must(t, err)
	pushed.Manifests[0].ChunkIndex = desc
	g := newIndexFirst(pushed)
	reg.misbehave(g.fault)
	root := nodeRoot(t, debianRelease)
	o := testNode(root).opts
	o.Hook = g.download
	if _, err := New(o).Pull(ctx, PullRequest{Ref: ref}); err != nil {
		t.Fatal(err)
	}
	checkActive(t, root, "app", v1)
	file := filepath.Base(v1)
	if got := keptIndex(t, root, "app", file); !bytes.Equal(got, lie) {
		t.Fatalf("the first pull kept %d bytes of chunk index, want the %d published", len(got), len(lie))
	}

	push(t, ref, v2)
	reg.misbehave(nil)
	var log bytes.Buffer
	o.Hook, o.Log = nil, &log
	r, err := New(o).Pull(ctx, PullRequest{Ref: ref})
	if err != nil {
		t.Fatalf("%v\n%s", err, log.String())
	}
	checkActive(t, root, "app", v2)
	if r.Action != "updated" || !strings.Contains(log.String(), "downloading the whole image") {
		t.Fatalf("%+v\n%s", r, log.String())
	}
	if b := keptIndex(t, root, "app", file); b != nil {
		t.Fatalf("the lying index of %s is still kept\n%s", file, log.String())
	}
	reg.served.Settle()
	t.Logf("sent %d of %d; %s", reg.served.Bytes(), size(t, v2), strings.TrimSpace(log.String()))
}

// A chunk index lookup that ends after the download (the registry holds
// the referrers request until the pull is about to keep the image) is
// waited for: its index is kept, byte for byte as published.
func TestFullPullKeepsSlowChunkIndex(t *testing.T) {
	reg := newDeltaReg(t)
	v1 := extImage(t, "app", "1", map[string][]byte{"lib/shared": blob(2<<20, 71)})
	ref := reg.Ref("ext/app:stable")
	pushed := push(t, ref, v1)
	release := make(chan struct{})
	var once sync.Once
	var held atomic.Int64
	reg.misbehave(func(w http.ResponseWriter, r *http.Request, next http.Handler) bool {
		if referrersAPI(r) || referrersTag(r) {
			held.Add(1)
			select {
			case <-release:
			case <-r.Context().Done():
			}
		}
		return false
	})
	root := nodeRoot(t, debianRelease)
	o := testNode(root).opts
	var waited atomic.Bool
	o.Hook = func(p string) {
		if p == "chunk-index-wait" {
			waited.Store(true)
			once.Do(func() { close(release) })
		}
	}
	_, err := New(o).Pull(context.Background(), PullRequest{Ref: ref})
	once.Do(func() { close(release) }) // for the test's own lookup below
	if err != nil {
		t.Fatal(err)
	}
	checkActive(t, root, "app", v1)
	if got, want := keptIndex(t, root, "app", filepath.Base(v1)), publishedIndex(t, reg, "ext/app:stable", pushed); !bytes.Equal(got, want) {
		t.Fatalf("the store keeps %d bytes of chunk index, want the %d published", len(got), len(want))
	}
	if held.Load() == 0 || !waited.Load() {
		t.Fatalf("the lookup was not slower than the download (%d referrer requests held, waited %v)", held.Load(), waited.Load())
	}
}
