package oci_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/sysext/sysext/extension"
	"github.com/sysext/sysext/oci/ocitest"
)

// What an unchanged update check costs, asked two ways of the real
// distribution registry, directly and through the same binary in proxy
// mode (a pull-through cache): a HEAD of the tag's manifest, and a GET
// with If-None-Match naming the digest the node has (304 when unchanged).
// Counted at loopback fronts: requests and bytes on the wire (both
// directions, headers included) per check, at the node's registry and, for
// the cache, at the origin behind it. Run with:
//
//	go test -run '^$' -bench UnchangedCheck -benchtime 200x ./oci/
func BenchmarkUnchangedCheck(b *testing.B) {
	origin := ocitest.StartDistribution(b)
	originFront, originWire := ocitest.Front(b, origin)
	cache := ocitest.StartDistributionProxy(b, originFront, 0)
	cacheFront, cacheWire := ocitest.Front(b, cache)
	tg, _ := origin.Open(b, "sysext/docker:24")
	m := ocitest.SysextManifest(b, tg, extension.HostArch(), "24.0")
	idx := ocitest.Index(b, tg, "24", []ocispec.Descriptor{m})
	accept := strings.Join([]string{"application/vnd.docker.distribution.manifest.v2+json", "application/vnd.docker.distribution.manifest.list.v2+json", ocispec.MediaTypeImageManifest, ocispec.MediaTypeImageIndex, "application/vnd.oci.artifact.manifest.v1+json"}, ", ")
	client := &http.Client{}
	check := func(b *testing.B, host, method string, conditional bool, want int) {
		req, _ := http.NewRequestWithContext(context.Background(), method, "http://"+host+"/v2/sysext/docker/manifests/24", nil)
		req.Header.Set("Accept", accept)
		if conditional {
			req.Header.Set("If-None-Match", `"`+idx.Digest.String()+`"`)
		}
		resp, err := client.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != want {
			b.Fatalf("%s: %s", method, resp.Status)
		}
		if want == http.StatusOK && resp.Header.Get("Docker-Content-Digest") != idx.Digest.String() {
			b.Fatalf("%s: digest %q", method, resp.Header.Get("Docker-Content-Digest"))
		}
	}
	for _, via := range []struct {
		name string
		host string
	}{{"origin", originFront.Host}, {"cache", cacheFront.Host}} {
		for _, c := range []struct {
			name   string
			method string
			cond   bool
			want   int
		}{
			{"HEAD", http.MethodHead, false, http.StatusOK},
			{"conditional-GET", http.MethodGet, true, http.StatusNotModified},
			{"GET", http.MethodGet, false, http.StatusOK},
		} {
			b.Run(fmt.Sprintf("%s/%s", via.name, c.name), func(b *testing.B) {
				check(b, via.host, c.method, c.cond, c.want) // warm: the cache has fetched it, the connection is open
				originWire.Reset()
				cacheWire.Reset()
				b.ResetTimer()
				for b.Loop() {
					check(b, via.host, c.method, c.cond, c.want)
				}
				b.StopTimer()
				n := float64(b.N)
				front := originWire
				if via.name == "cache" {
					front = cacheWire
					in, out := originWire.Bytes()
					b.Logf("at the origin: %v", originWire.Kinds())
					b.ReportMetric(float64(originWire.Requests(""))/n, "origin-req/op")
					b.ReportMetric(float64(in+out)/n, "origin-wireB/op")
				}
				in, out := front.Bytes()
				b.ReportMetric(float64(front.Requests(""))/n, "req/op")
				b.ReportMetric(float64(in)/n, "reqB/op")
				b.ReportMetric(float64(out)/n, "respB/op")
			})
		}
	}
}
