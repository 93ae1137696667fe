package node

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/sysext/sysext/oci/ocitest"
	"github.com/sysext/sysext/store"
	"github.com/sysext/sysext/verify"
)

// The fleet simulation: on loopback, an origin (the distribution
// registry), a pull-through cache (the same binary in proxy mode, pointed
// at the origin), each behind a counting reverse proxy (ocitest.Front),
// and N node roots driven through the real node code (Sync, Update) with
// at most par at once. It publishes 1.0 signed, lets the fleet sync, runs
// an unchanged check across the fleet, publishes 2.0 and runs one update
// wave. Each node is what `sysext --root DIR sync` and `sysext --root DIR
// update --all` do; a root other than / is never refreshed, as in every
// node test.
type fleetSim struct {
	n, par int
	pad    int // random bytes in the image: its size
	// faults, during the wave: the origin answers 429 (Retry-After: 1) to
	// every request for the wave's first throttle, the cache is restarted when half the
	// fleet is done, and every tenth node lists first a mirror (in front of
	// the cache) that corrupts every blob it serves.
	faults   bool
	throttle time.Duration
	// digestOnly configures the cache with pull-from-mirror = "digest-only":
	// nodes ask the origin what the tag points to, the cache serves the
	// bytes.
	digestOnly bool
	ttl        time.Duration // the cache's ttl (0: the registry's default)
	// canary runs node 0 alone before the rest of each pass: the first
	// arrival, as the timer's randomized delay makes it, fills the cache.
	// Without it every node arrives at once, and the distribution proxy
	// fetches a blob from the origin once per concurrent miss (it does not
	// coalesce them).
	canary bool
	// tagTTL > 0 puts a caching tier (nginx, ocitest.StartNginxCache) in
	// front of the pull-through cache, keeping tags for tagTTL: the
	// unchanged check and the wave then come a tagTTL after the last
	// publish, as timer runs hours apart do.
	tagTTL time.Duration
}

// phase is what one pass of the fleet cost.
type phase struct {
	Name                     string
	Wall                     time.Duration
	Failed                   int
	Actions                  map[string]int
	OriginReqs, CacheReqs    int64
	OriginOut, CacheOut      int64 // bytes sent, headers included
	OriginIn                 int64
	OriginPeak, CachePeak    int64 // most connections open at once
	OriginKinds              map[string]int64
	BadMirrorReqs, Throttled int64
}

type fleetReport struct {
	N, Par    int
	ImageSize int64 // the 2.0 image file
	Phases    []phase
	Errors    []string // first few node errors
}

func (r *fleetReport) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "fleet of %d nodes (%d at once), image %d bytes\n", r.N, r.Par, r.ImageSize)
	for _, p := range r.Phases {
		fmt.Fprintf(&b, "%-9s wall %-8v failed %d actions %v\n", p.Name, p.Wall.Round(time.Millisecond), p.Failed, p.Actions)
		fmt.Fprintf(&b, "          origin: %d requests (%.2f/node), %d bytes out (%.3f× image, %.0f/node), peak %d connections, %v\n",
			p.OriginReqs, float64(p.OriginReqs)/float64(r.N), p.OriginOut, float64(p.OriginOut)/float64(r.ImageSize), float64(p.OriginOut)/float64(r.N), p.OriginPeak, p.OriginKinds)
		fmt.Fprintf(&b, "          cache:  %d requests (%.2f/node), %d bytes out (%.0f/node), peak %d connections\n",
			p.CacheReqs, float64(p.CacheReqs)/float64(r.N), p.CacheOut, float64(p.CacheOut)/float64(r.N), p.CachePeak)
		if p.BadMirrorReqs > 0 || p.Throttled > 0 {
			fmt.Fprintf(&b, "          faults: %d requests to the corrupting mirror, %d answered 429 by the origin\n", p.BadMirrorReqs, p.Throttled)
		}
	}
	for _, e := range r.Errors {
		fmt.Fprintf(&b, "error: %s\n", e)
	}
	return b.String()
}

// run runs the simulation; it fails tb when the harness itself breaks
// and returns the report (node failures are counted, not fatal).
func (f fleetSim) run(tb testing.TB) *fleetReport {
	tb.Helper()
	ctx := context.Background()
	var throttleUntil, throttled atomic.Int64 // UnixNano
	throttle := func(w http.ResponseWriter, r *http.Request, _ http.Handler) bool {
		if time.Now().UnixNano() >= throttleUntil.Load() {
			return false
		}
		throttled.Add(1)
		w.Header().Set("Retry-After", "1")
		http.Error(w, `{"errors":[{"code":"TOOMANYREQUESTS","message":"slow down"}]}`, http.StatusTooManyRequests)
		return true
	}
	origin := ocitest.StartDistribution(tb)
	originFront, originWire := ocitest.Front(tb, origin, throttle)
	cache := ocitest.StartDistributionProxy(tb, originFront, f.ttl)
	tier := cache
	if f.tagTTL > 0 {
		tier = ocitest.StartNginxCache(tb, cache, f.tagTTL)
	}
	cacheFront, cacheWire := ocitest.Front(tb, tier)
	badMirror, badWire := ocitest.Front(tb, tier, ocitest.CorruptBlob(-1))
	// aTTLLater lets the caching tier's tags expire, as the next timer run
	// comes hours later (nginx's clock ticks in whole seconds: a second
	// more).
	aTTLLater := func() {
		if f.tagTTL > 0 {
			time.Sleep(f.tagTTL + 1100*time.Millisecond)
		}
	}

	pub := newPublisher(tb)
	pubKey, err := os.ReadFile(pub.pub)
	must(tb, err)
	ref := originFront.Ref("sysext/hello:stable")
	pub.publish(tb, ref, makeImage(tb, meta("hello", "1.0"), f.pad))
	v2 := makeImage(tb, meta("hello", "2.0"), f.pad)
	st, err := os.Stat(v2)
	must(tb, err)
	v2File, err := os.Open(v2)
	must(tb, err)
	v2Digest, err := digest.FromReader(v2File)
	v2File.Close()
	must(tb, err)

	pfm := ""
	if f.digestOnly {
		pfm = "pull-from-mirror = \"digest-only\"\n"
	}
	conf := func(i int) string {
		c := "[[registry]]\nlocation = \"" + originFront.Host + "\"\n"
		if f.faults && i%10 == 0 {
			c += "[[registry.mirror]]\nlocation = \"" + badMirror.Host + "\"\n" + pfm
		}
		return c + "[[registry.mirror]]\nlocation = \"" + cacheFront.Host + "\"\n" + pfm
	}
	base := tb.TempDir()
	nodes := make([]*Node, f.n)
	roots := make([]string, f.n)
	for i := range nodes {
		root := filepath.Join(base, strconv.Itoa(i))
		must(tb, os.MkdirAll(filepath.Join(root, "etc/sysext/extensions.d"), 0o755))
		must(tb, os.WriteFile(filepath.Join(root, "etc/os-release"), []byte(debianRelease), 0o644))
		must(tb, os.WriteFile(filepath.Join(root, "etc/sysext/acme.pub"), pubKey, 0o644))
		must(tb, os.WriteFile(filepath.Join(root, "etc/sysext/extensions.d/hello.conf"),
			[]byte("[Extension]\nSource="+ref+"\nPolicy=key:/etc/sysext/acme.pub\n"), 0o644))
		writeConf(tb, root, "etc/sysext/registries.conf", conf(i))
		o := ocitest.TestOptions()
		// The real policy: four retries, full jitter from 250 ms.
		o.MaxRetries, o.RetryWait = 0, 0
		roots[i] = root
		nodes[i] = New(Options{
			Store:    store.Options{Root: root, LockTimeout: time.Minute},
			OCI:      o,
			Verifier: PolicyVerifier{Trust: verify.TrustOptions{Root: root}},
		})
	}

	rep := &fleetReport{N: f.n, Par: f.par, ImageSize: st.Size()}
	var errMu sync.Mutex
	// pass runs op on every node, par at once; halfway is called once when
	// half the fleet is done.
	pass := func(name string, op func(n *Node) ([]Result, error), halfway func()) phase {
		originWire.Reset()
		cacheWire.Reset()
		badWire.Reset()
		throttled.Store(0)
		p := phase{Name: name, Actions: map[string]int{}}
		var mu sync.Mutex
		var done atomic.Int64
		var half sync.Once
		sem := make(chan struct{}, f.par)
		var wg sync.WaitGroup
		start := time.Now()
		for i, n := range nodes {
			sem <- struct{}{}
			if i == 1 && f.canary {
				wg.Wait()
			}
			wg.Go(func() {
				defer func() { <-sem }()
				rs, err := op(n)
				mu.Lock()
				for _, r := range rs {
					p.Actions[r.Action]++
				}
				if err != nil {
					p.Failed++
				}
				mu.Unlock()
				if err != nil {
					errMu.Lock()
					if len(rep.Errors) < 5 {
						rep.Errors = append(rep.Errors, fmt.Sprintf("%s node %d: %v", name, i, err))
					}
					errMu.Unlock()
				}
				if done.Add(1) == int64(f.n/2) && halfway != nil {
					half.Do(halfway)
				}
			})
		}
		wg.Wait()
		p.Wall = time.Since(start)
		p.OriginReqs, p.CacheReqs = originWire.Requests(""), cacheWire.Requests("")
		p.OriginIn, p.OriginOut = originWire.Bytes()
		_, p.CacheOut = cacheWire.Bytes()
		_, p.OriginPeak = originWire.Conns()
		_, p.CachePeak = cacheWire.Conns()
		p.OriginKinds = originWire.Kinds()
		p.BadMirrorReqs, p.Throttled = badWire.Requests(""), throttled.Load()
		rep.Phases = append(rep.Phases, p)
		return p
	}

	pass("sync", func(n *Node) ([]Result, error) { return n.Sync(ctx, SyncOptions{}) }, nil)
	update := func(n *Node) ([]Result, error) { return n.Update(ctx, UpdateOptions{All: true}) }
	aTTLLater()
	pass("unchanged", update, nil)

	pub.publish(tb, ref, v2)
	aTTLLater()
	var halfway func()
	if f.faults {
		throttleUntil.Store(time.Now().Add(f.throttle).UnixNano())
		// The cache the nodes talk to: nginx when it is there.
		halfway = func() { tier.Restart(tb) }
	}
	pass("wave", update, halfway)
	throttleUntil.Store(0)

	// Every node ends on 2.0, the image the publisher signed, byte for
	// byte, linked as the active extension.
	wrong := 0
	for i, root := range roots {
		if err := checkNodeOn(ctx, root, "2.0", v2Digest); err != nil {
			wrong++
			if len(rep.Errors) < 10 {
				rep.Errors = append(rep.Errors, fmt.Sprintf("node %d state: %v", i, err))
			}
		}
	}
	rep.Phases = append(rep.Phases, phase{Name: "state", Failed: wrong})
	return rep
}

// checkNodeOn verifies a node root's state: hello's active install is
// version with the layer digest want, its file in the store hashes to it,
// and the activation link points at it.
func checkNodeOn(ctx context.Context, root, version string, want digest.Digest) error {
	s, err := store.Open(ctx, store.Options{Root: root, ReadOnly: true})
	if err != nil {
		return err
	}
	defer s.Close()
	e, ok := s.Entry("hello")
	if !ok {
		return fmt.Errorf("hello not installed")
	}
	if e.Active.Version != version || e.Active.LayerDigest != want || e.Pending != nil {
		return fmt.Errorf("active %s %s (pending %v), want %s %s", e.Active.Version, e.Active.LayerDigest, e.Pending, version, want)
	}
	f, err := os.Open(s.ImagePath("hello", e.Active.File))
	if err != nil {
		return err
	}
	defer f.Close()
	got, err := digest.FromReader(f)
	if err != nil {
		return err
	}
	if got != want {
		return fmt.Errorf("the stored file hashes to %s, want %s", got, want)
	}
	if !s.LinkTargetIs("hello", e.Active.File) {
		return fmt.Errorf("the activation link does not point at %s", e.Active.File)
	}
	return nil
}

func (r *fleetReport) phase(name string) phase {
	for _, p := range r.Phases {
		if p.Name == name {
			return p
		}
	}
	return phase{}
}

// A small fleet, with every fault at once during the wave: the origin
// throttling, the cache restarted halfway, a mirror corrupting blobs.
// Every node ends on 2.0, byte for byte what was signed; nothing else is
// activated.
func TestFleetWaveWithFaults(t *testing.T) {
	rep := fleetSim{n: 20, par: 4, pad: 64 << 10, faults: true, throttle: 2 * time.Second, digestOnly: true, canary: true}.run(t)
	t.Log("\n" + rep.String())
	for _, p := range rep.Phases {
		if p.Failed != 0 {
			t.Errorf("%s: %d nodes failed", p.Name, p.Failed)
		}
	}
	if a := rep.phase("sync").Actions; a["pulled"] != 20 {
		t.Errorf("sync: %v, want 20 pulled", a)
	}
	if a := rep.phase("unchanged").Actions; a["unchanged"] != 20 {
		t.Errorf("unchanged check: %v", a)
	}
	w := rep.phase("wave")
	if w.Actions["updated"] != 20 {
		t.Errorf("wave: %v, want 20 updated", w.Actions)
	}
	if w.Throttled == 0 || w.BadMirrorReqs == 0 {
		t.Errorf("the faults did not fire: %d throttled, %d requests to the corrupting mirror", w.Throttled, w.BadMirrorReqs)
	}
}

// Behind a cache that keeps tags (nginx in front of the pull-through
// cache), an unchanged check across the fleet costs the origin one tag
// request per TTL (2 through the proxy mode), not 2 per node, and the
// wave costs it about one image.
func TestFleetTagCache(t *testing.T) {
	rep := fleetSim{n: 10, par: 4, pad: 1 << 20, canary: true, tagTTL: time.Second}.run(t)
	t.Log("\n" + rep.String())
	for _, p := range rep.Phases {
		if p.Failed != 0 {
			t.Errorf("%s: %d nodes failed", p.Name, p.Failed)
		}
	}
	if u := rep.phase("unchanged"); u.Actions["unchanged"] != 10 || u.OriginReqs > 2 {
		t.Errorf("unchanged check: %v, %d requests at the origin (want at most 2 for the fleet)", u.Actions, u.OriginReqs)
	}
	if w := rep.phase("wave"); w.Actions["updated"] != 10 || float64(w.OriginOut) > 1.05*float64(rep.ImageSize) {
		t.Errorf("wave: %v, the origin sent %d bytes for a %d-byte image", w.Actions, w.OriginOut, rep.ImageSize)
	}
}

// The simulation as a benchmark. SYSEXT_FLEET_N nodes (default 20),
// SYSEXT_FLEET_PAR at once (default 32), SYSEXT_FLEET_IMAGE_KIB of payload
// (default 1024), SYSEXT_FLEET_FAULTS=1 for the faults of the test above;
// SYSEXT_FLEET_DIGEST_ONLY=1 has the nodes ask tags of the origin;
// SYSEXT_FLEET_STAMPEDE=1 starts every pass with par nodes at once (no
// canary); SYSEXT_FLEET_TAG_TTL_MS=T puts nginx, keeping tags T ms, in
// front of the pull-through cache. The
// numbers are logged and reported per node.
func BenchmarkFleet(b *testing.B) {
	env := func(k string, def int) int {
		if v, err := strconv.Atoi(os.Getenv(k)); err == nil && v > 0 {
			return v
		}
		return def
	}
	f := fleetSim{
		n:          env("SYSEXT_FLEET_N", 20),
		par:        env("SYSEXT_FLEET_PAR", 32),
		pad:        env("SYSEXT_FLEET_IMAGE_KIB", 1024) << 10,
		faults:     os.Getenv("SYSEXT_FLEET_FAULTS") == "1",
		digestOnly: os.Getenv("SYSEXT_FLEET_DIGEST_ONLY") == "1",
		canary:     os.Getenv("SYSEXT_FLEET_STAMPEDE") != "1",
	}
	if ms := env("SYSEXT_FLEET_TAG_TTL_MS", 0); ms > 0 {
		f.tagTTL = time.Duration(ms) * time.Millisecond
	}
	f.throttle = 2 * time.Second
	for b.Loop() {
		rep := f.run(b)
		b.Log("\n" + rep.String())
		w, u := rep.phase("wave"), rep.phase("unchanged")
		b.ReportMetric(w.Wall.Seconds(), "wave-s")
		b.ReportMetric(float64(w.OriginOut)/float64(rep.ImageSize), "wave-origin-bytes/image")
		b.ReportMetric(float64(w.OriginReqs)/float64(f.n), "wave-origin-req/node")
		b.ReportMetric(float64(w.OriginPeak), "wave-origin-peak-conns")
		b.ReportMetric(float64(u.OriginReqs)/float64(f.n), "unchanged-origin-req/node")
		failed := 0
		for _, p := range rep.Phases {
			failed += p.Failed
		}
		b.ReportMetric(float64(failed), "failed-nodes")
	}
}
