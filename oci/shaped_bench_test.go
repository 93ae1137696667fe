package oci_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/sysext/sysext/oci"
	"github.com/sysext/sysext/oci/ocitest"
)

// A link where each connection is capped at 50 Mbit/s and all together at
// 400 Mbit/s, as registries on object stores and CDNs often behave (a
// shaping proxy, ocitest.Shaped, in front of the distribution registry):
// `sysext fetch` of a 1 GiB (and a 256 MiB) image, which goes on in parallel ranges, next
// to `oras pull` (one connection) on the same link. The floor beside the
// ratio is the link itself: eight parallel range GETs of the blob through
// the proxy, bytes dropped.
//
//	go test -run '^$' -bench ShapedPerConn -benchtime 1x ./oci/
func BenchmarkShapedPerConn1GiB(b *testing.B)   { benchShapedPerConn(b, 1<<30) }
func BenchmarkShapedPerConn256MiB(b *testing.B) { benchShapedPerConn(b, 256<<20) }

func benchShapedPerConn(b *testing.B, size int64) {
	oras, sysext, reg, img, fi := benchSetup(b, size)
	ref := "bench/shaped:1"
	if d, _ := timed(b, b.TempDir(), sysext, "push", "-q", img, reg.Ref(ref)); d <= 0 {
		b.Fatal("push")
	}
	link := ocitest.Link{PerConn: 50e6 / 8, Rate: 400e6 / 8}
	shaped := ocitest.Shaped(b, reg, link)
	tg, r := resolveBench(b, shaped, ref)
	mb := float64(fi.Size()) / 1e6
	var us, them, floor time.Duration
	var rss float64
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		floor += linkFloor(b, shaped, tg, r, 8)
		d, dOras, peak, _ := fetchPair(b, i, sysext, oras, shaped.Ref(ref), fi.Name(), "")
		us += d
		them += dOras
		rss = max(rss, peak)
	}
	b.StopTimer()
	n := float64(b.N)
	b.ReportMetric(link.Rate/1e6, "link-cap-MB/s")
	b.ReportMetric(link.PerConn/1e6, "conn-cap-MB/s")
	b.ReportMetric(mb*n/floor.Seconds(), "link-8-ranges-MB/s")
	b.ReportMetric(mb*n/us.Seconds(), "sysext-fetch-MB/s")
	b.ReportMetric(mb*n/them.Seconds(), "oras-pull-MB/s")
	b.ReportMetric(them.Seconds()/us.Seconds(), "fetch-ratio")
	b.ReportMetric(floor.Seconds()/us.Seconds(), "fetch-of-link")
	b.ReportMetric(rss, "fetch-peak-RSS-MiB")
}

// resolveBench resolves ref in reg for this host.
func resolveBench(b *testing.B, reg *ocitest.Registry, ref string) (oci.Target, *oci.Resolved) {
	b.Helper()
	tg, r := reg.Open(b, ref)
	res, err := oci.Resolve(context.Background(), tg, r, "")
	if err != nil {
		b.Fatal(err)
	}
	return tg, res
}

// linkFloor fetches the whole layer as conns equal range GETs in
// parallel through reg, dropping the bytes: what the link carries, with
// no disk and no hash.
func linkFloor(b *testing.B, reg *ocitest.Registry, tg oci.Target, r *oci.Resolved, conns int) time.Duration {
	b.Helper()
	layer := r.Entry.Layer
	url := fmt.Sprintf("%s/v2/bench/shaped/blobs/%s", reg.URL, layer.Digest)
	part := (layer.Size + int64(conns) - 1) / int64(conns)
	var wg sync.WaitGroup
	errs := make(chan error, conns)
	start := time.Now()
	for off := int64(0); off < layer.Size; off += part {
		wg.Add(1)
		go func(off, end int64) {
			defer wg.Done()
			req, _ := http.NewRequest(http.MethodGet, url, nil)
			req.Header.Set("Range", fmt.Sprintf("bytes=%d-%d", off, end-1))
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				errs <- err
				return
			}
			defer resp.Body.Close()
			if n, err := io.Copy(io.Discard, resp.Body); err != nil || n != end-off {
				errs <- fmt.Errorf("range %d-%d: %d bytes, %v", off, end, n, err)
			}
		}(off, min(off+part, layer.Size))
	}
	wg.Wait()
	d := time.Since(start)
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	return d
}
