package node

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/sysext/sysext/delta"
	"github.com/sysext/sysext/oci/ocitest"
	"github.com/sysext/sysext/store"
)

// cacheFleet is the fleet setup of issue 16: the real distribution
// registry as the origin, the same binary in proxy mode as a pull-through
// cache, each behind a counting front (blob bytes sent: Served), and nodes
// whose registries.conf names the cache as the origin's mirror. The
// cache's front may misbehave.
type cacheFleet struct {
	pub                 *publisher
	ref, conf           string
	originSent          ocitest.Served
	cacheSent           ocitest.Served
	cacheHost           string
	mu                  sync.Mutex
	fault               ocitest.Fault
	v1, v2              string
	changed, sharedSize int64
}

func newCacheFleet(t *testing.T) *cacheFleet {
	f := &cacheFleet{pub: newPublisher(t)}
	origin := ocitest.StartDistribution(t)
	originFront, _ := ocitest.Front(t, origin, f.originSent.Fault())
	cache := ocitest.StartDistributionProxy(t, originFront, 0)
	cacheFront, _ := ocitest.Front(t, cache, f.cacheSent.Fault(), func(w http.ResponseWriter, r *http.Request, next http.Handler) bool {
		f.mu.Lock()
		fault := f.fault
		f.mu.Unlock()
		return fault != nil && fault(w, r, next)
	})
	f.cacheHost = cacheFront.Host
	f.ref = originFront.Ref("ext/app:stable")
	f.conf = "[[registry]]\nlocation = \"" + originFront.Host + "\"\n[[registry.mirror]]\nlocation = \"" + cacheFront.Host + "\"\n"
	shared, changed := blob(6<<20, 31), int64(1<<20)
	f.v1 = extImage(t, "app", "1.0", map[string][]byte{"lib/app/shared": shared, "lib/app/changed": blob(int(changed), 32), "bin/app": []byte("#!/bin/sh\necho 1\n")})
	f.v2 = extImage(t, "app", "2.0", map[string][]byte{"lib/app/shared": shared, "lib/app/changed": blob(int(changed), 33), "bin/app": []byte("#!/bin/sh\necho 2\n")})
	f.changed, f.sharedSize = changed, int64(len(shared))
	f.pub.publish(t, f.ref, f.v1)
	return f
}

// misbehave sets the cache front's fault from now on.
func (f *cacheFleet) misbehave(fault ocitest.Fault) {
	f.mu.Lock()
	f.fault = fault
	f.mu.Unlock()
}

// reset starts counting again at both fronts.
func (f *cacheFleet) reset() {
	f.originSent.Reset()
	f.cacheSent.Reset()
}

// sent returns the blob bytes the origin and the cache sent since reset.
func (f *cacheFleet) sent() (origin, cache int64) {
	f.originSent.Settle()
	f.cacheSent.Settle()
	return f.originSent.Bytes(), f.cacheSent.Bytes()
}

// node returns a node root with the fleet's registries.conf.
func (f *cacheFleet) node(t *testing.T) string {
	root := nodeRoot(t, debianRelease)
	writeConf(t, root, "etc/sysext/registries.conf", f.conf)
	return root
}

// pull pulls the tag on root (signature checked) and returns the result
// and the node's log.
func (f *cacheFleet) pull(t *testing.T, root string, o func(*Options)) (*Result, string) {
	t.Helper()
	var log logBuf
	n := f.pub.node(root, &log)
	if o != nil {
		opts := n.opts
		o(&opts)
		n = New(opts)
	}
	r, err := n.Pull(context.Background(), PullRequest{Ref: f.ref, Trust: store.Trust{KeyPaths: []string{f.pub.pub}}})
	if err != nil {
		t.Fatalf("%v\n%s", err, log.String())
	}
	if !strings.HasPrefix(r.Signer, "key:") {
		t.Fatalf("signer %q: the signature was not checked", r.Signer)
	}
	return r, log.String()
}

// A fleet behind a pull-through cache gets delta updates: nodes holding
// v1 update to v2 through the cache. The first asks the cache for ranges
// of a layer it does not hold yet: the distribution proxy fetches the
// whole blob from the origin and answers 200 with all of it; the node
// reads that answer to its end (the cache keeps its copy; the origin sends
// the blob once) and takes the chunks it lacks from it. Every later node
// is sent about what changed, by the cache, with Range requests, and the
// origin sends it nothing. Each ends with v2 byte for byte as a full
// download, signature checked. Before, a range request never went through
// a mirror: every node downloaded the whole image.
func TestDeltaThroughPullThroughCache(t *testing.T) {
	f := newCacheFleet(t)
	first, second := f.node(t), f.node(t)
	f.pull(t, first, nil)
	f.pull(t, second, nil)
	f.pub.publish(t, f.ref, f.v2)
	image := size(t, f.v2)
	// The most a delta of the changed file may fetch: the file, the
	// chunks it straddles, and the index.
	deltaMax := f.changed + 4*delta.MaxSize + 64<<10

	f.reset()
	r1, log1 := f.pull(t, first, nil)
	origin1, cache1 := f.sent()
	t.Logf("first node (cold cache): downloaded %d, reused %d; the cache sent %d, the origin %d (image %d)\n%s", r1.Downloaded, r1.Reused, cache1, origin1, image, log1)
	checkActive(t, first, "app", f.v2)
	// The origin sends the cache one copy of the blob, never more.
	if origin1 > image+deltaMax {
		t.Fatalf("first node: the origin sent %d bytes for an image of %d", origin1, image)
	}
	if by := sourcesOf(r1); by["layer"] != f.cacheHost+"/ext/app" {
		t.Fatalf("first node: layer from %q; sources %+v", by["layer"], r1.Sources)
	}

	f.reset()
	r2, log2 := f.pull(t, second, nil)
	origin2, cache2 := f.sent()
	t.Logf("second node (warm cache): downloaded %d, reused %d; the cache sent %d, the origin %d (image %d)\n%s", r2.Downloaded, r2.Reused, cache2, origin2, image, log2)
	checkActive(t, second, "app", f.v2)
	if cache2 < f.changed || cache2 > deltaMax {
		t.Fatalf("second node: the cache sent %d bytes, want about the changed %d (image %d)", cache2, f.changed, image)
	}
	if r2.Downloaded > deltaMax || r2.Reused < f.sharedSize-2*delta.MaxSize {
		t.Fatalf("second node: downloaded %d, reused %d (image %d)", r2.Downloaded, r2.Reused, image)
	}
	if origin2 > 0 {
		t.Fatalf("second node: the origin sent %d blob bytes", origin2)
	}
	if strings.Contains(log2, "whole image") {
		t.Fatalf("second node fell back:\n%s", log2)
	}
	if by := sourcesOf(r2); by["layer"] != f.cacheHost+"/ext/app" {
		t.Fatalf("second node: layer from %q; sources %+v", by["layer"], r2.Sources)
	}

	// The same file, byte for byte, as a full download through the cache.
	full := f.node(t)
	f.pull(t, full, func(o *Options) { o.NoDelta = true })
	sameActive(t, second, full, "app")
}

// A cache that misbehaves for a delta: a chunk that does not match (the
// cache is not asked for the layer again: the whole image comes from the
// origin), ranges answered with the whole blob (read once, to its end: the
// delta takes its chunks from it), a blob it lacks (404: the ranges go to
// the origin). Each says so in one line, ends with v2 byte for byte, and
// leaves nothing behind.
func TestDeltaThroughMirrorFaults(t *testing.T) {
	for _, tc := range []struct {
		name  string
		fault ocitest.Fault
		line  string // what the one line says
		// what may come from the origin and the cache (0: nothing)
		fromOrigin, fromCache func(f *cacheFleet, image int64) (min, max int64)
		reused                bool // the delta's chunks were reused
	}{
		{
			name: "a chunk that does not match", fault: ocitest.CorruptRange(1),
			line:       "downloading the whole image",
			fromOrigin: func(f *cacheFleet, image int64) (int64, int64) { return image, image + 64<<10 },
			fromCache:  func(f *cacheFleet, image int64) (int64, int64) { return 1, image },
		},
		{
			name: "ranges answered with the whole blob", fault: ocitest.IgnoreRange(-1),
			line:       "answered with the whole blob",
			fromOrigin: func(f *cacheFleet, image int64) (int64, int64) { return 0, 64 << 10 },
			fromCache:  func(f *cacheFleet, image int64) (int64, int64) { return image, image + 64<<10 },
			reused:     true,
		},
		{
			name: "a blob it lacks", fault: ocitest.FailStatus(http.StatusNotFound, -1, func(r *http.Request) bool {
				return ocitest.Blobs(r) && r.Header.Get("Range") != ""
			}),
			line:       "trying",
			fromOrigin: func(f *cacheFleet, image int64) (int64, int64) { return f.changed, f.changed + 4*delta.MaxSize },
			fromCache:  func(f *cacheFleet, image int64) (int64, int64) { return 0, 64 << 10 },
			reused:     true,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newCacheFleet(t)
			root := f.node(t)
			f.pull(t, root, nil)
			f.pub.publish(t, f.ref, f.v2)
			// The cache holds v2 (another node's full download).
			f.pull(t, f.node(t), func(o *Options) { o.NoDelta = true })
			image := size(t, f.v2)
			f.misbehave(tc.fault)
			f.reset()
			r, log := f.pull(t, root, nil)
			origin, cache := f.sent()
			t.Logf("downloaded %d, reused %d; the cache sent %d, the origin %d (image %d)\n%s", r.Downloaded, r.Reused, cache, origin, image, log)
			checkActive(t, root, "app", f.v2)
			if n := strings.Count(log, tc.line); n != 1 {
				t.Fatalf("%d lines say %q, want 1:\n%s", n, tc.line, log)
			}
			if tc.line != "downloading the whole image" && strings.Contains(log, "downloading the whole image") {
				t.Fatalf("fell back to the whole image:\n%s", log)
			}
			if lo, hi := tc.fromOrigin(f, image); origin < lo || origin > hi {
				t.Fatalf("the origin sent %d blob bytes, want %d to %d", origin, lo, hi)
			}
			if lo, hi := tc.fromCache(f, image); cache < lo || cache > hi {
				t.Fatalf("the cache sent %d blob bytes, want %d to %d", cache, lo, hi)
			}
			if tc.reused && r.Reused < f.sharedSize-2*delta.MaxSize {
				t.Fatalf("reused %d: the delta was not taken", r.Reused)
			}
		})
	}
}
