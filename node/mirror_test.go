package node

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/sysext/sysext/oci"
	"github.com/sysext/sysext/oci/ocitest"
	"github.com/sysext/sysext/store"
	"github.com/sysext/sysext/verify"
)

// publisher signs what it pushes to an origin with one key, as cosign
// does (a sha256-<hex>.sig tag naming the origin repository).
type publisher struct {
	signer *verify.Signer
	pub    string // the public key file
}

func newPublisher(t testing.TB) *publisher {
	t.Helper()
	priv, pub, err := verify.GenerateKeyPair([]byte("pw"))
	must(t, err)
	s, err := verify.LoadPrivateKey(priv, []byte("pw"))
	must(t, err)
	p := filepath.Join(t.TempDir(), "signer.pub")
	must(t, os.WriteFile(p, pub, 0o644))
	return &publisher{signer: s, pub: p}
}

// publish pushes the image file to ref and signs the index and its
// manifests for ref's repository.
func (p *publisher) publish(t testing.TB, ref, file string) *oci.PushResult {
	t.Helper()
	res := push(t, ref, file)
	r, err := oci.ParseReference(ref)
	must(t, err)
	tg, err := oci.Open(context.Background(), r, ocitest.TestOptions())
	must(t, err)
	_, err = verify.SignTree(context.Background(), tg, res.Index, r.Scope(), p.signer)
	must(t, err)
	return res
}

// writeConf writes a registries.conf under the node root.
func writeConf(t testing.TB, root, path, conf string) {
	t.Helper()
	full := filepath.Join(root, path)
	must(t, os.MkdirAll(filepath.Dir(full), 0o755))
	must(t, os.WriteFile(full, []byte(conf), 0o644))
}

// logBuf is a Log that tests read while the node writes.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func (p *publisher) node(root string, log *logBuf) *Node {
	return New(Options{
		Store:    storeOpts(root),
		OCI:      ocitest.TestOptions(),
		Verifier: PolicyVerifier{Trust: verify.TrustOptions{KeyPaths: []string{p.pub}, Root: root}},
		Log:      log,
	})
}

func sourcesOf(r *Result) map[string]string {
	out := map[string]string{}
	for _, e := range r.Sources {
		if e.Error == "" {
			out[strings.Fields(e.What)[0]] = e.Source
		}
	}
	return out
}

// A node whose registries.conf (under its root) names a pull-through cache
// pulls through it: the real distribution registry as the origin and the
// same binary in proxy mode as the cache. The signature names the origin's
// repository and is checked for it, though the cache served it; a second
// node costs the origin no image bytes; an update that finds nothing new
// costs one request at the cache.
func TestPullThroughCache(t *testing.T) {
	origin := ocitest.StartDistribution(t)
	originFront, originWire := ocitest.Front(t, origin)
	cache := ocitest.StartDistributionProxy(t, originFront, 0)
	cacheFront, cacheWire := ocitest.Front(t, cache)
	pub := newPublisher(t)
	ref := originFront.Ref("sysext/hello:stable")
	img := makeImage(t, meta("hello", "1.0"), 256<<10)
	pub.publish(t, ref, img)
	conf := "[[registry]]\nlocation = \"" + originFront.Host + "\"\n[[registry.mirror]]\nlocation = \"" + cacheFront.Host + "\"\n"

	pull := func(t *testing.T) (*Result, string) {
		root := nodeRoot(t, debianRelease)
		writeConf(t, root, "etc/sysext/registries.conf", conf)
		var log logBuf
		r, err := pub.node(root, &log).Pull(context.Background(), PullRequest{Ref: ref, Trust: store.Trust{KeyPaths: []string{pub.pub}}})
		if err != nil {
			t.Fatalf("%v\n%s", err, log.String())
		}
		return r, root
	}
	originWire.Reset()
	r, root := pull(t)
	by := sourcesOf(r)
	for _, what := range []string{"tag", "index", "manifest", "layer", "signatures"} {
		if by[what] != cacheFront.Host+"/sysext/hello" {
			t.Errorf("%s served by %q, want the cache; sources %+v", what, by[what], r.Sources)
		}
	}
	if !strings.HasPrefix(r.Signer, "key:") {
		t.Fatalf("signer %q", r.Signer)
	}
	_, out := originWire.Bytes()
	size, _ := os.Stat(img)
	t.Logf("first node: the origin sent %d bytes (image %d), %v", out, size.Size(), originWire.Kinds())
	if out < size.Size() {
		t.Fatalf("the cache did not fetch the image from the origin? %d bytes", out)
	}

	// A second node: the image comes from the cache, not the origin.
	originWire.Reset()
	pull(t)
	if _, out := originWire.Bytes(); out > size.Size()/10 {
		t.Fatalf("second node: the origin sent %d bytes (%v)", out, originWire.Kinds())
	}
	t.Logf("second node: the origin sent %d bytes, %v", func() int64 { _, o := originWire.Bytes(); return o }(), originWire.Kinds())

	// Nothing new: one request at the cache (a conditional GET).
	cacheWire.Reset()
	n := pub.node(root, &logBuf{})
	res, err := n.Update(context.Background(), UpdateOptions{All: true})
	if err != nil || len(res) != 1 || res[0].Action != "unchanged" {
		t.Fatalf("update: %+v %v", res, err)
	}
	if k := cacheWire.Kinds(); cacheWire.Requests("") != 1 || k["GET manifest"] != 1 {
		t.Fatalf("unchanged update: %v at the cache, want one conditional GET", k)
	}
	b, _ := json.Marshal(res[0])
	if !strings.Contains(string(b), `"sources":[{"what":"tag stable","source":"`+cacheFront.Host+`/sysext/hello","mirror":true}]`) {
		t.Errorf("--json of the update: %s", b)
	}
}

// A mirror that lies about a tag (it points it at an image the publisher
// did not sign) cannot make the node install it: the answer does not
// verify, the mirror is dropped for tags and the origin answers. With the
// origin unreachable, the pull fails; nothing is installed.
func TestMirrorCannotSubstitute(t *testing.T) {
	pub := newPublisher(t)
	origin := ocitest.NewOlareg(t)
	ref := origin.Ref("sysext/hello:stable")
	pub.publish(t, ref, makeImage(t, meta("hello", "1.0"), 0))
	// The mirror holds a copy, then its tag is moved to an unsigned 6.6.6
	// (and a copy of the index signed by another key, whose signature
	// also does not count).
	mirror := ocitest.NewOlareg(t)
	mref, err := oci.ParseReference(mirror.Ref("sysext/hello:stable"))
	must(t, err)
	src, err := oci.Open(context.Background(), mustRef(t, ref), ocitest.TestOptions())
	must(t, err)
	dst, err := oci.Open(context.Background(), mref, ocitest.TestOptions())
	must(t, err)
	_, err = oci.Copy(context.Background(), src, mustRef(t, ref), dst, mref, oci.CopyOptions{})
	must(t, err)
	evil := push(t, mirror.Ref("sysext/hello:stable"), makeImage(t, meta("hello", "6.6.6"), 0))
	other := newPublisher(t)
	_, err = verify.SignTree(context.Background(), dst, evil.Index, mustRef(t, ref).Scope(), other.signer)
	must(t, err)

	conf := "[[registry]]\nlocation = \"" + origin.Host + "\"\n[[registry.mirror]]\nlocation = \"" + mirror.Host + "\"\n"
	root := nodeRoot(t, debianRelease)
	writeConf(t, root, "etc/containers/registries.conf", conf)
	var log logBuf
	r, err := pub.node(root, &log).Pull(context.Background(), PullRequest{Ref: ref, Trust: store.Trust{KeyPaths: []string{pub.pub}}})
	if err != nil {
		t.Fatalf("%v\n%s", err, log.String())
	}
	t.Logf("log:\n%s", log.String())
	if r.Version != "1.0" || sourcesOf(r)["tag"] != origin.Host+"/sysext/hello" {
		t.Fatalf("installed %s, tag from %q; sources %+v", r.Version, sourcesOf(r)["tag"], r.Sources)
	}
	if !strings.Contains(log.String(), "what mirror "+mirror.Host+"/sysext/hello says tag stable points to") {
		t.Fatalf("no line about the mirror's tag: %s", log.String())
	}

	// The origin gone: the mirror's answer alone is refused.
	root2 := nodeRoot(t, debianRelease)
	dead := ocitest.Refused(t)
	writeConf(t, root2, "etc/sysext/registries.conf", "[[registry]]\nprefix = \""+origin.Host+"\"\nlocation = \""+dead+"\"\n[[registry.mirror]]\nlocation = \""+mirror.Host+"\"\n")
	if r, err := pub.node(root2, &logBuf{}).Pull(context.Background(), PullRequest{Ref: ref, Trust: store.Trust{KeyPaths: []string{pub.pub}}}); err == nil {
		t.Fatalf("installed %+v from the lying mirror alone", r)
	} else {
		t.Logf("origin down: %v", err)
	}
	if _, err := os.Lstat(filepath.Join(root2, "var/lib/extensions/hello.raw")); err == nil {
		t.Fatal("a refused pull left a link")
	}
}

func mustRef(t *testing.T, s string) oci.Reference {
	t.Helper()
	r, err := oci.ParseReference(s)
	must(t, err)
	return r
}

// A mirror whose copy lacks the signatures, or holds one by another key:
// the origin's signatures are read (one line) and the pull succeeds.
func TestMirrorSignaturesFallBackToOrigin(t *testing.T) {
	pub := newPublisher(t)
	origin := ocitest.NewOlareg(t)
	ref := origin.Ref("sysext/hello:stable")
	pub.publish(t, ref, makeImage(t, meta("hello", "1.0"), 0))
	for _, c := range []struct {
		name string
		sign bool // sign the mirror's copy with another key
	}{{"no signatures", false}, {"another key", true}} {
		t.Run(c.name, func(t *testing.T) {
			mirror := ocitest.NewOlareg(t)
			mref := mustRef(t, mirror.Ref("sysext/hello:stable"))
			src, err := oci.Open(context.Background(), mustRef(t, ref), ocitest.TestOptions())
			must(t, err)
			dst, err := oci.Open(context.Background(), mref, ocitest.TestOptions())
			must(t, err)
			_, err = oci.Copy(context.Background(), src, mustRef(t, ref), dst, mref, oci.CopyOptions{SkipReferrers: true})
			must(t, err)
			if c.sign {
				root, err := dst.Resolve(context.Background(), "stable")
				must(t, err)
				_, err = verify.SignTree(context.Background(), dst, root, mustRef(t, ref).Scope(), newPublisher(t).signer)
				must(t, err)
			}
			root := nodeRoot(t, debianRelease)
			writeConf(t, root, "etc/sysext/registries.conf.d/50-mirror.conf", "[[registry]]\nlocation = \""+origin.Host+"\"\n[[registry.mirror]]\nlocation = \""+mirror.Host+"\"\n")
			var log logBuf
			r, err := pub.node(root, &log).Pull(context.Background(), PullRequest{Ref: ref, Trust: store.Trust{KeyPaths: []string{pub.pub}}})
			if err != nil {
				t.Fatalf("%v\n%s", err, log.String())
			}
			fromOrigin := false
			for _, e := range r.Sources {
				fromOrigin = fromOrigin || e.What == "signatures" && e.Source == origin.Host+"/sysext/hello" && e.Error == ""
			}
			// Missing, or another key's: what the mirror served does not
			// verify, the origin's signatures are read (one line) and do.
			// The origin is not asked for each signature format the mirror
			// lacks: that would cost it a request per node per pull.
			if by := sourcesOf(r); by["layer"] != mirror.Host+"/sysext/hello" || !fromOrigin || strings.Count(log.String(), "reading the signatures from the origin") != 1 {
				t.Fatalf("sources %+v, log:\n%s", r.Sources, log.String())
			}
		})
	}
}

// A mirror that serves a corrupted image: the store's ingest of it is
// dropped, the image comes from the origin, one line says so, and no
// partial download is left.
func TestMirrorCorruptBlobIntoStore(t *testing.T) {
	pub := newPublisher(t)
	origin := ocitest.NewOlareg(t)
	ref := origin.Ref("sysext/hello:stable")
	pub.publish(t, ref, makeImage(t, meta("hello", "1.0"), 128<<10))
	on := new(bool)
	var fired ocitest.Counter
	corrupt := ocitest.CorruptBlob(-1, &fired)
	mirror := ocitest.NewOlareg(t, func(w http.ResponseWriter, r *http.Request, next http.Handler) bool {
		return *on && corrupt(w, r, next)
	})
	mref := mustRef(t, mirror.Ref("sysext/hello:stable"))
	src, _ := oci.Open(context.Background(), mustRef(t, ref), ocitest.TestOptions())
	dst, _ := oci.Open(context.Background(), mref, ocitest.TestOptions())
	_, err := oci.Copy(context.Background(), src, mustRef(t, ref), dst, mref, oci.CopyOptions{})
	must(t, err)
	*on = true
	root := nodeRoot(t, debianRelease)
	writeConf(t, root, "etc/sysext/registries.conf", "[[registry]]\nlocation = \""+origin.Host+"\"\n[[registry.mirror]]\nlocation = \""+mirror.Host+"\"\n")
	var log logBuf
	r, err := pub.node(root, &log).Pull(context.Background(), PullRequest{Ref: ref, Trust: store.Trust{KeyPaths: []string{pub.pub}}})
	if err != nil {
		t.Fatalf("%v\n%s", err, log.String())
	}
	if by := sourcesOf(r); by["layer"] != origin.Host+"/sysext/hello" || fired.N() == 0 {
		t.Fatalf("layer from %q, corrupted %d times", by["layer"], fired.N())
	}
	if n := strings.Count(log.String(), "do not match the digest"); n != 1 {
		t.Fatalf("want one line for the corrupt mirror:\n%s", log.String())
	}
	ents, _ := filepath.Glob(filepath.Join(root, "var/lib/sysext/store/hello/.ingest-*"))
	if len(ents) != 0 {
		t.Fatalf("left behind: %v", ents)
	}
	if got := active(t, root, "hello"); got != r.File {
		t.Fatalf("active %s, pulled %s", got, r.File)
	}
}

// A mirror that holds the image and its signatures serves the whole pull:
// the origin gets no request, not even for the signature formats the
// mirror lacks (the distribution registry has no referrers API, so the
// referrers tag is looked up, and is not there). Before, each such lookup
// went on to the origin: a request per node per pull.
func TestMirrorWithSignaturesCostsTheOriginNothing(t *testing.T) {
	pub := newPublisher(t)
	var count requestCounter
	on := new(bool)
	origin := ocitest.NewOlareg(t, func(w http.ResponseWriter, r *http.Request, next http.Handler) bool {
		return *on && count.fault()(w, r, next)
	})
	ref := origin.Ref("sysext/hello:stable")
	pub.publish(t, ref, makeImage(t, meta("hello", "1.0"), 0))
	mirror := ocitest.StartDistribution(t)
	mref := mustRef(t, mirror.Ref("sysext/hello:stable"))
	src, err := oci.Open(context.Background(), mustRef(t, ref), ocitest.TestOptions())
	must(t, err)
	dst, err := oci.Open(context.Background(), mref, ocitest.TestOptions())
	must(t, err)
	_, err = oci.Copy(context.Background(), src, mustRef(t, ref), dst, mref, oci.CopyOptions{})
	must(t, err)
	*on = true
	root := nodeRoot(t, debianRelease)
	writeConf(t, root, "etc/sysext/registries.conf", "[[registry]]\nlocation = \""+origin.Host+"\"\n[[registry.mirror]]\nlocation = \""+mirror.Host+"\"\n")
	var log logBuf
	r, err := pub.node(root, &log).Pull(context.Background(), PullRequest{Ref: ref, Trust: store.Trust{KeyPaths: []string{pub.pub}}})
	if err != nil {
		t.Fatalf("%v\n%s", err, log.String())
	}
	if n := count.all.Load(); n != 0 {
		t.Fatalf("the origin got %d requests; sources %+v; log:\n%s", n, r.Sources, log.String())
	}
}
