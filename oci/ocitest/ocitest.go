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
`, store, host)
		if err := os.WriteFile(cfg, []byte(conf), 0o644); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		cmd := exec.CommandContext(ctx, bin, "serve", cfg)
		cmd.Env = append(os.Environ(), "OTEL_TRACES_EXPORTER=none", "OTEL_SDK_DISABLED=true")
		logf := filepath.Join(dir, "registry.log")
		lf, err := os.Create(logf)
		if err != nil {
			cancel()
			t.Fatal(err)
		}
		cmd.Stdout, cmd.Stderr = lf, lf
		if err := cmd.Start(); err != nil {
			cancel()
			lf.Close()
			t.Fatalf("start registry: %v", err)
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		url := "http://" + host
		if err := waitReady(url, exited); err != nil {
			cancel()
			<-exited
			lf.Close()
			log, _ := os.ReadFile(logf)
			lastErr = fmt.Errorf("%v\n%s", err, log)
			continue
		}
		t.Cleanup(func() {
			cancel()
			<-exited
			lf.Close()
		})
		return &Registry{Host: host, URL: url, Dir: store}
	}
	t.Fatalf("registry did not start: %v", lastErr)
	return nil
}

// waitReady polls /v2/ until it answers 200, the process exits, or 30 s
// pass. Polling is the only readiness signal the binary gives.
func waitReady(url string, exited <-chan error) error {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-exited:
			return fmt.Errorf("registry exited: %v", err)
		default:
		}
		resp, err := http.Get(url + "/v2/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("registry at %s not ready after 30s", url)
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
