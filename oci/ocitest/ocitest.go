package ocitest

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/olareg/olareg"
	"github.com/olareg/olareg/config"

	"github.com/sysext/sysext/internal/testenv"
	"github.com/sysext/sysext/oci"
)

// Registry is a running registry on 127.0.0.1.
type Registry struct {
	// Host is "127.0.0.1:PORT", the registry part of references.
	Host string
	// URL is "http://127.0.0.1:PORT".
	URL string
	// Dir is the storage directory (distribution only).
	Dir string
	// Referrers reports whether the server implements the OCI 1.1
	// referrers API (olareg yes, distribution no: the fallback tag path).
	Referrers bool
	// restart stops and starts a registry process again.
	restart func() error
}

// Ref returns Host + "/" + repoTag, e.g. "127.0.0.1:5000/ext/docker:1".
func (r *Registry) Ref(repoTag string) string { return r.Host + "/" + repoTag }

// Reference parses Ref(repoTag), failing the test on error.
func (r *Registry) Reference(t testing.TB, repoTag string) oci.Reference {
	t.Helper()
	ref, err := oci.ParseReference(r.Ref(repoTag))
	if err != nil {
		t.Fatal(err)
	}
	return ref
}

// Open opens repoTag's repository with default options (plain HTTP, few
// quick retries), failing the test on error.
func (r *Registry) Open(t testing.TB, repoTag string) (oci.Target, oci.Reference) {
	t.Helper()
	ref := r.Reference(t, repoTag)
	tg, err := oci.Open(context.Background(), ref, TestOptions())
	if err != nil {
		t.Fatal(err)
	}
	return tg, ref
}

// TestOptions are oci.Options for tests: no stored credentials consulted,
// two retries with a 10ms first back-off.
func TestOptions() oci.Options {
	return oci.Options{MaxRetries: 2, RetryWait: 10 * time.Millisecond, Credentials: noCredentials}
}

// NewOlareg starts olareg in memory behind httptest on a loopback port.
// Each wrap is applied around the registry handler, the first one
// outermost (see Fault).
func NewOlareg(t testing.TB, faults ...Fault) *Registry {
	t.Helper()
	h := olareg.New(config.Config{Storage: config.ConfigStorage{StoreType: config.StoreMem}})
	var handler http.Handler = h
	if len(faults) > 0 {
		handler = Faulty(h, faults...)
	}
	srv := httptest.NewServer(handler)
	t.Cleanup(func() {
		srv.Close()
		_ = h.Close()
	})
	host := strings.TrimPrefix(srv.URL, "http://")
	return &Registry{Host: host, URL: srv.URL, Referrers: true}
}

// StartDistribution starts the distribution registry binary (`registry`
// on PATH, built by `make tools`; the test is skipped outside CI when it
// is missing) with filesystem storage in a temp dir, on a free loopback
// port, and waits until /v2/ answers. It is killed when the test ends.
func StartDistribution(t testing.TB) *Registry {
	t.Helper()
	return startDistribution(t, "")
}

// StartDistributionProxy starts the distribution registry as a
// pull-through cache of upstream (its proxy mode: `proxy: remoteurl:`),
// keeping what it fetched for ttl (0: the registry's default, 7 days). It
// answers reads only; Restart stops and starts it again on the same port
// and storage.
func StartDistributionProxy(t testing.TB, upstream *Registry, ttl time.Duration) *Registry {
	t.Helper()
	conf := "proxy:\n  remoteurl: " + upstream.URL + "\n"
	if ttl > 0 {
		conf += fmt.Sprintf("  ttl: %s\n", ttl)
	}
	return startDistribution(t, conf)
}

// Restart stops a registry started by StartDistribution or
// StartDistributionProxy and starts it again with the same port and
// storage, waiting until it answers.
func (r *Registry) Restart(t testing.TB) {
	t.Helper()
	if r.restart == nil {
		t.Fatal("Restart: not a registry process")
	}
	if err := r.restart(); err != nil {
		t.Fatal(err)
	}
}

func startDistribution(t testing.TB, extra string) *Registry {
	t.Helper()
	bin := testenv.RequireTool(t, "registry")
	dir := t.TempDir()
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		port, err := freePort()
		if err != nil {
			t.Fatal(err)
		}
		host := fmt.Sprintf("127.0.0.1:%d", port)
		cfg := filepath.Join(dir, "config.yml")
		store := filepath.Join(dir, "storage")
		conf := fmt.Sprintf(`version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: %s
  delete:
    enabled: true
http:
  addr: %s
`, store, host) + extra
		if err := os.WriteFile(cfg, []byte(conf), 0o644); err != nil {
			t.Fatal(err)
		}
		p := &process{bin: bin, cfg: cfg, log: filepath.Join(dir, "registry.log"), url: "http://" + host}
		if err := p.start(); err != nil {
			lastErr = err
			continue
		}
		t.Cleanup(p.stop)
		return &Registry{Host: host, URL: p.url, Dir: store, restart: func() error {
			p.stop()
			return p.start()
		}}
	}
	t.Fatalf("registry did not start: %v", lastErr)
	return nil
}

// process is one run of the registry binary.
type process struct {
	bin, cfg, log, url string
	args               []string // nil: serve cfg (the registry)
	mu                 sync.Mutex
	cancel             func()
	exited             chan struct{} // closed when the process has exited
	lf                 *os.File
}

func (p *process) start() error {
	ctx, cancel := context.WithCancel(context.Background())
	args := p.args
	if args == nil {
		args = []string{"serve", p.cfg}
	}
	cmd := exec.CommandContext(ctx, p.bin, args...)
	cmd.Env = append(os.Environ(), "OTEL_TRACES_EXPORTER=none", "OTEL_SDK_DISABLED=true")
	lf, err := os.OpenFile(p.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		cancel()
		return err
	}
	cmd.Stdout, cmd.Stderr = lf, lf
	if err := cmd.Start(); err != nil {
		cancel()
		lf.Close()
		return fmt.Errorf("start registry: %v", err)
	}
	// Closed, not sent on: both waitReady and the cleanup below may wait
	// for the exit (a process that died at once was waited for twice).
	exited := make(chan struct{})
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(exited) }()
	if err := waitReady(p.url, exited, &waitErr); err != nil {
		cancel()
		<-exited
		lf.Close()
		log, _ := os.ReadFile(p.log)
		return fmt.Errorf("%v\n%s", err, log)
	}
	p.mu.Lock()
	p.cancel, p.exited, p.lf = cancel, exited, lf
	p.mu.Unlock()
	return nil
}

func (p *process) stop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cancel == nil {
		return
	}
	p.cancel()
	<-p.exited
	p.lf.Close()
	p.cancel = nil
}

// waitReady polls /v2/ until it answers 200, the process exits, or 30 s
// pass. Polling is the only readiness signal the binary gives.
func waitReady(url string, exited <-chan struct{}, waitErr *error) error {
	deadline := time.Now().Add(30 * time.Second)
	var last error
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			return fmt.Errorf("the server for %s exited: %v", url, *waitErr)
		default:
		}
		resp, err := http.Get(url + "/v2/")
		last = err
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = fmt.Errorf("/v2/: %s", resp.Status)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("registry at %s not ready after 30s: %v", url, last)
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// NewLayout returns an oci:DIR reference to a fresh (not yet existing)
// layout directory under t.TempDir(), with the given tag.
func NewLayout(t testing.TB, tag string) oci.Reference {
	t.Helper()
	ref, err := oci.ParseReference(oci.LayoutScheme + filepath.Join(t.TempDir(), "layout") + ":" + tag)
	if err != nil {
		t.Fatal(err)
	}
	return ref
}

// OpenLayout opens a fresh layout (NewLayout) for writing, as push and
// copy destinations open one.
func OpenLayout(t testing.TB, tag string) (oci.Target, oci.Reference) {
	t.Helper()
	ref := NewLayout(t, tag)
	o := TestOptions()
	o.CreateLayout = true
	tg, err := oci.Open(context.Background(), ref, o)
	if err != nil {
		t.Fatal(err)
	}
	return tg, ref
}
