package oci_test

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/sysext/sysext/internal/testenv"
	"github.com/sysext/sysext/oci"
	"github.com/sysext/sysext/oci/ocitest"
)

// mirrored is an origin with an image and the options to read it through
// the mirrors of a registries.conf.
type mirrored struct {
	p      pushed
	origin *ocitest.Registry
	served *ocitest.Served // blob bytes the origin sent
	opts   oci.Options
	mu     sync.Mutex
	lines  []string // the log
}

func (m *mirrored) log() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return strings.Join(m.lines, "\n")
}

// newMirrored pushes an image to an origin and returns it with options
// whose registries.conf names the mirror hosts (host only: the repository
// path is the origin's) with pull-from-mirror pfm.
func newMirrored(t testing.TB, pfm string, mirrorHosts ...string) *mirrored {
	t.Helper()
	return newMirroredSize(t, 256<<10, pfm, mirrorHosts...)
}

// newMirroredSize is newMirrored with an image of about size bytes.
func newMirroredSize(t testing.TB, size int, pfm string, mirrorHosts ...string) *mirrored {
	t.Helper()
	m := &mirrored{served: &ocitest.Served{}}
	m.origin = ocitest.NewOlareg(t, m.served.Fault())
	m.p = pushImage(t, m.origin, size)
	conf := fmt.Sprintf("[[registry]]\nlocation = %q\n", m.origin.Host)
	for _, h := range mirrorHosts {
		conf += fmt.Sprintf("[[registry.mirror]]\nlocation = %q\n", h)
		if pfm != "" {
			conf += fmt.Sprintf("pull-from-mirror = %q\n", pfm)
		}
	}
	r := &oci.Registries{}
	if err := r.Add("registries.conf", []byte(conf), nil); err != nil {
		t.Fatal(err)
	}
	m.opts = ocitest.TestOptions()
	m.opts.Registries = r
	m.opts.ResponseTimeout = 500 * time.Millisecond
	m.opts.Log = func(s string) {
		m.mu.Lock()
		m.lines = append(m.lines, s)
		m.mu.Unlock()
	}
	m.served.Reset()
	return m
}

// mirrorOf starts an olareg mirror holding a copy of the origin's image
// (made with oci.Copy, as `sysext copy` keeps a site mirror) and faults
// that start once the copy is there.
func mirrorOf(t testing.TB, m *mirrored, faults ...ocitest.Fault) *ocitest.Registry {
	t.Helper()
	on := new(bool)
	var fs []ocitest.Fault
	for _, f := range faults {
		fs = append(fs, func(w http.ResponseWriter, r *http.Request, next http.Handler) bool {
			return *on && f(w, r, next)
		})
	}
	reg := ocitest.NewOlareg(t, fs...)
	dst, dref := reg.Open(t, "ext/hello:1.0")
	if _, err := oci.Copy(context.Background(), m.p.tg, m.p.ref, dst, dref, oci.CopyOptions{}); err != nil {
		t.Fatal(err)
	}
	*on = true
	m.served.Reset()
	return reg
}

// pullThrough resolves and downloads the image through the mirrors and
// checks the file is the image.
func (m *mirrored) pullThrough(t *testing.T) (oci.Target, []oci.SourceEvent) {
	t.Helper()
	ctx := context.Background()
	tg, err := oci.Open(ctx, m.p.ref, m.opts)
	if err != nil {
		t.Fatal(err)
	}
	r, err := oci.Resolve(ctx, tg, m.p.ref, "x86-64")
	if err != nil {
		t.Fatal(err)
	}
	dir := testenv.TempDirNoLeak(t, ".#")
	d, err := oci.Download(ctx, tg, &r.Entry, oci.DownloadOptions{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(d.Path)
	want, _ := os.ReadFile(m.p.file)
	if !bytes.Equal(got, want) {
		t.Fatal("the downloaded image is not the pushed one")
	}
	return tg, oci.SourceEvents(tg)
}

// servedBy returns who served what ("layer" → source) from the events.
func servedBy(evs []oci.SourceEvent) map[string]string {
	out := map[string]string{}
	for _, e := range evs {
		if e.Error == "" {
			out[strings.Fields(e.What)[0]] = e.Source
		}
	}
	return out
}

func failures(evs []oci.SourceEvent) []string {
	var out []string
	for _, e := range evs {
		if e.Error != "" {
			out = append(out, e.What+" @ "+e.Source+": "+e.Error)
		}
	}
	return out
}

func TestMirrorServesEverything(t *testing.T) {
	m := newMirrored(t, "")
	mir := mirrorOf(t, m)
	m = withMirrors(t, m, mir.Host)
	_, evs := m.pullThrough(t)
	by := servedBy(evs)
	for _, what := range []string{"tag", "manifest", "layer"} {
		if by[what] != mir.Host+"/ext/hello" {
			t.Errorf("%s served by %q, want the mirror; events %+v", what, by[what], evs)
		}
	}
	if m.served.Requests() != 0 || m.log() != "" || len(failures(evs)) != 0 {
		t.Fatalf("origin blob requests %d, log %q, failures %v", m.served.Requests(), m.log(), failures(evs))
	}
}

// withMirrors rewrites m's configuration to name these mirrors.
func withMirrors(t testing.TB, m *mirrored, hosts ...string) *mirrored {
	t.Helper()
	return withMirrorsPFM(t, m, "", hosts...)
}

func withMirrorsPFM(t testing.TB, m *mirrored, pfm string, hosts ...string) *mirrored {
	t.Helper()
	conf := fmt.Sprintf("[[registry]]\nlocation = %q\n", m.origin.Host)
	for _, h := range hosts {
		conf += fmt.Sprintf("[[registry.mirror]]\nlocation = %q\n", h)
		if pfm != "" {
			conf += fmt.Sprintf("pull-from-mirror = %q\n", pfm)
		}
	}
	r := &oci.Registries{}
	if err := r.Add("registries.conf", []byte(conf), nil); err != nil {
		t.Fatal(err)
	}
	m.opts.Registries = r
	return m
}

// Each failing mirror costs one line and one event, then the next source
// is asked, the origin last; the image is right whoever served it.
func TestMirrorFallbacks(t *testing.T) {
	for _, c := range []struct {
		name  string
		fault ocitest.Fault // nil: nothing listens
		want  string        // in the log line
		// layerOnly: the fault hits blobs only, so the tag and manifests
		// still come from the mirror.
		layerOnly bool
		// manifestsOnly: the fault hits manifests by digest only: they come
		// from the origin, the layer (digest-checked) from the mirror.
		manifestsOnly bool
	}{
		{name: "refused", want: "connection refused"},
		{name: "5xx", fault: ocitest.FailStatus(http.StatusBadGateway, -1, ocitest.Any), want: "502"},
		{name: "timeout", fault: ocitest.Hang(ocitest.Any), want: "timeout awaiting response headers"},
		{name: "corrupted blob", fault: ocitest.CorruptBlob(-1), want: "do not match the digest", layerOnly: true},
		{name: "truncated blob", fault: ocitest.TruncateBlob(-1), want: "size mismatch", layerOnly: true},
		{name: "wrong manifest", fault: ocitest.RewriteBody(func(r *http.Request) bool {
			return r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/manifests/sha256:")
		}, -1, func(b []byte) []byte { b[len(b)/2] ^= 1; return b }), want: "does not match its digest", manifestsOnly: true},
	} {
		t.Run(c.name, func(t *testing.T) {
			m := newMirrored(t, "")
			bad := ocitest.Refused(t)
			if c.fault != nil {
				bad = mirrorOf(t, m, c.fault).Host
			}
			m = withMirrors(t, m, bad)
			_, evs := m.pullThrough(t)
			t.Logf("log:\n%s", m.log())
			if !strings.Contains(m.log(), c.want) || !strings.Contains(m.log(), bad) || !strings.Contains(m.log(), "trying "+m.origin.Host) {
				t.Errorf("log %q: want one line naming the mirror %s, %q and the origin", m.log(), bad, c.want)
			}
			wantLayer := m.origin.Host + "/ext/hello"
			if c.manifestsOnly {
				wantLayer = bad + "/ext/hello"
				if by := servedBy(evs); by["manifest"] != m.origin.Host+"/ext/hello" || by["index"] != m.origin.Host+"/ext/hello" {
					t.Errorf("manifests served by %v, want the origin", by)
				}
			}
			if by := servedBy(evs); by["layer"] != wantLayer {
				t.Errorf("layer served by %q, want %s; events %+v", by["layer"], wantLayer, evs)
			}
			if c.layerOnly {
				if by := servedBy(evs); by["tag"] != bad+"/ext/hello" {
					t.Errorf("tag served by %q, want the mirror", by["tag"])
				}
			}
			if len(failures(evs)) == 0 {
				t.Errorf("no failure reported in %+v", evs)
			}
		})
	}
}

// Two mirrors, the first refused: the second serves, the origin sends
// nothing.
func TestMirrorsInOrder(t *testing.T) {
	m := newMirrored(t, "")
	good := mirrorOf(t, m)
	m = withMirrors(t, m, ocitest.Refused(t), good.Host)
	_, evs := m.pullThrough(t)
	if by := servedBy(evs); by["layer"] != good.Host+"/ext/hello" || by["tag"] != good.Host+"/ext/hello" {
		t.Fatalf("served %v", by)
	}
	if m.served.Requests() != 0 {
		t.Fatalf("the origin sent %d blobs", m.served.Requests())
	}
	if n := strings.Count(m.log(), "\n") + 1; n != 1 {
		t.Fatalf("want one line for the refused mirror (it is not asked again in this pull): %q", m.log())
	}
}

// A mirror that lacks the image is passed by (a partial mirror).
func TestMirrorWithoutTheImage(t *testing.T) {
	m := newMirrored(t, "")
	empty := ocitest.NewOlareg(t)
	m = withMirrors(t, m, empty.Host)
	_, evs := m.pullThrough(t)
	if by := servedBy(evs); by["layer"] != m.origin.Host+"/ext/hello" {
		t.Fatalf("served %v", by)
	}
	if !strings.Contains(m.log(), "not found") {
		t.Fatalf("log %q", m.log())
	}
}

// pull-from-mirror = "digest-only": what the tag points to comes from the
// origin, the content by digest from the mirror.
func TestMirrorDigestOnly(t *testing.T) {
	m := newMirrored(t, "")
	var tags ocitest.Counter
	mir := mirrorOf(t, m, countTagRequests(&tags))
	m = withMirrorsPFM(t, m, "digest-only", mir.Host)
	_, evs := m.pullThrough(t)
	by := servedBy(evs)
	if by["tag"] != m.origin.Host+"/ext/hello" || by["layer"] != mir.Host+"/ext/hello" || tags.N() != 0 {
		t.Fatalf("served %v; the mirror was asked for the tag %d times", by, tags.N())
	}
	if m.served.Requests() != 0 {
		t.Fatalf("the origin sent %d blobs", m.served.Requests())
	}
}

// pull-from-mirror = "tag-only": a reference pinned by digest does not
// use the mirror at all.
func TestMirrorTagOnly(t *testing.T) {
	m := newMirrored(t, "")
	var all ocitest.Counter
	mir := mirrorOf(t, m, func(_ http.ResponseWriter, _ *http.Request, _ http.Handler) bool { all.Inc(); return false })
	m = withMirrorsPFM(t, m, "tag-only", mir.Host)
	m.p.ref = m.p.ref.WithDigest(m.p.r.Root.Digest)
	_, evs := m.pullThrough(t)
	if all.N() != 0 || len(evs) != 0 {
		t.Fatalf("the tag-only mirror was asked %d times for a digest reference; events %+v", all.N(), evs)
	}
	// By tag it serves.
	m.p.ref = m.p.ref.WithTag("1.0")
	if _, evs := m.pullThrough(t); servedBy(evs)["layer"] != mir.Host+"/ext/hello" {
		t.Fatalf("by tag: %+v", evs)
	}
}

func countTagRequests(c *ocitest.Counter) ocitest.Fault {
	return func(_ http.ResponseWriter, r *http.Request, _ http.Handler) bool {
		if ocitest.Manifests(r) && !strings.Contains(r.URL.Path, "/manifests/sha256:") && !strings.Contains(r.URL.Path, "/manifests/sha256-") {
			c.Inc()
		}
		return false
	}
}

// A table's location moves where a prefix is read from: the reference
// keeps its name (the identity signatures are checked for).
func TestLocationRemap(t *testing.T) {
	m := newMirrored(t, "")
	r := &oci.Registries{}
	conf := fmt.Sprintf("[[registry]]\nprefix = \"registry.invalid/acme\"\nlocation = %q\n", m.origin.Host+"/ext")
	if err := r.Add("registries.conf", []byte(conf), nil); err != nil {
		t.Fatal(err)
	}
	m.opts.Registries = r
	logical, err := oci.ParseReference("registry.invalid/acme/hello:1.0")
	if err != nil {
		t.Fatal(err)
	}
	m.p.ref = logical
	m.pullThrough(t)
	if m.served.Requests() == 0 {
		t.Fatal("the origin was not asked")
	}
}

// CheckTag costs one request: 304 when the tag did not move, the new
// index (used by the pull, not asked again) when it did.
func TestCheckTag(t *testing.T) {
	reg := ocitest.StartDistribution(t)
	front, wire := ocitest.Front(t, reg)
	p := pushImage(t, front, 4<<10)
	ctx := context.Background()
	wire.Reset()
	c, err := oci.CheckTag(ctx, p.tg, p.ref, p.r.Root.Digest)
	if err != nil || c.Changed || c.Body != nil {
		t.Fatalf("%+v %v", c, err)
	}
	if k := wire.Kinds(); k["GET manifest"] != 1 || wire.Requests("") != 1 {
		t.Fatalf("unchanged: %v, want one conditional GET", k)
	}
	wire.Reset()
	c, err = oci.CheckTag(ctx, p.tg, p.ref, digest.Digest("sha256:"+strings.Repeat("0", 64)))
	if err != nil || !c.Changed || c.Root.Digest != p.r.Root.Digest || c.Body == nil || c.Root.MediaType != p.r.Root.MediaType {
		t.Fatalf("moved: %+v %v", c, err)
	}
	r, err := oci.ResolveWith(ctx, p.tg, p.ref, "x86-64", oci.ResolveOptions{Root: c.Root, RootBody: c.Body})
	if err != nil || r.Root.Digest != p.r.Root.Digest {
		t.Fatal(err)
	}
	if k := wire.Kinds(); k["GET manifest"] != 2 || wire.Requests("") != 2 {
		t.Fatalf("moved: %v: want the check and the one manifest under the index, the index not asked again", k)
	}
	if _, err := oci.CheckTag(ctx, p.tg, p.ref.WithTag("nope"), p.r.Root.Digest); err == nil || !strings.Contains(err.Error(), "404") {
		t.Fatalf("missing tag: %v", err)
	}
}
