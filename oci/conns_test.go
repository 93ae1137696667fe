package oci

import (
	"bytes"
	"context"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/olareg/olareg"
	"github.com/olareg/olareg/config"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/registry/remote"
	"oras.land/oras-go/v2/registry/remote/auth"
)

// Against a registry that speaks HTTP/2 over TLS (as ghcr.io, quay and
// Docker Hub do), parallel ranges each get a TCP connection of their own,
// over HTTP/1.1, so that a limit per connection (CDNs, object stores)
// applies to each; the API requests still share one HTTP/2 connection.
// Before, every range was a stream of the one HTTP/2 connection.
func TestRangesOverConnectionsOfTheirOwn(t *testing.T) {
	reg := olareg.New(config.Config{Storage: config.ConfigStorage{StoreType: config.StoreMem}})
	var mu sync.Mutex
	rangeProto := map[int]int{}
	rangeConns := map[string]bool{}
	apiProto := map[int]int{}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		if r.Header.Get("Range") != "" {
			rangeProto[r.ProtoMajor]++
			rangeConns[r.RemoteAddr] = true
		} else {
			apiProto[r.ProtoMajor]++
		}
		mu.Unlock()
		reg.ServeHTTP(w, r)
	}))
	srv.EnableHTTP2 = true
	srv.StartTLS()
	t.Cleanup(func() {
		srv.Close()
		_ = reg.Close()
	})

	repo, err := remote.NewRepository(strings.TrimPrefix(srv.URL, "https://") + "/ext/conns")
	if err != nil {
		t.Fatal(err)
	}
	noCredentials := func(context.Context, string) (auth.Credential, error) { return auth.EmptyCredential, nil }
	repo.Client = newAuthClient(Options{Insecure: true, Credentials: noCredentials})
	data := make([]byte, 8<<20)
	rand.NewChaCha8([32]byte{7}).Read(data)
	desc := content.NewDescriptorFromBytes("application/octet-stream", data)
	ctx := context.Background()
	if err := repo.Push(ctx, desc, bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	var ranges []Range
	for off := int64(0); off < desc.Size; off += 1 << 20 {
		ranges = append(ranges, Range{Off: off, Len: 1 << 20})
	}
	out, err := os.Create(filepath.Join(t.TempDir(), "blob"))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	if _, err := FetchRanges(ctx, repo, desc, ranges, out, RangeOptions{Concurrency: 4}); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(out.Name())
	if !bytes.Equal(got, data) {
		t.Fatal("the ranges do not make the blob")
	}
	mu.Lock()
	defer mu.Unlock()
	if apiProto[2] == 0 {
		t.Fatalf("no API request over HTTP/2 (%v): the test server does not speak it?", apiProto)
	}
	if rangeProto[2] > 0 || rangeProto[1] != len(ranges) {
		t.Errorf("range requests by HTTP major version %v, want all %d over HTTP/1.1", rangeProto, len(ranges))
	}
	if len(rangeConns) < 2 {
		t.Errorf("the ranges came over %d connection(s), want one each for those in flight together", len(rangeConns))
	}

	// Without --insecure (no TLS configuration of ours) the ranges'
	// handshake offers HTTP/1.1 only too.
	ra := newRangesApart(http.DefaultTransport.(*http.Transport).Clone())
	if tc := ra.ranges.(*http.Transport).TLSClientConfig; tc != nil && slices.Contains(tc.NextProtos, "h2") {
		t.Errorf("the ranges' TLS handshake offers %q", tc.NextProtos)
	}
}
