package oci_test

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/sysext/sysext/oci"
	"github.com/sysext/sysext/oci/ocitest"
)

// A large image through a mirror on a link that caps each connection at
// 50 Mbit/s and all together at 400 (BenchmarkShapedPerConn's link, in
// front of the mirror): one stream from the mirror (Concurrency 1: what a
// download through mirrors always did before) next to the download that
// hands over to parallel ranges from the mirror, and the same download
// from the mirror's registry named directly (no mirror configuration).
// The floor beside the ratios is the link's caps.
//
//	go test -run '^$' -bench ShapedPerConnMirror -benchtime 1x ./oci/
func BenchmarkShapedPerConnMirror128MiB(b *testing.B) {
	ctx := context.Background()
	m := newMirroredSize(b, 128<<20, "")
	mir := mirrorOf(b, m)
	link := ocitest.Link{PerConn: 50e6 / 8, Rate: 400e6 / 8}
	shaped := ocitest.Shaped(b, mir, link)
	m = withMirrors(b, m, shaped.Host)
	tg, err := oci.Open(ctx, m.p.ref, m.opts)
	if err != nil {
		b.Fatal(err)
	}
	direct, _ := shaped.Open(b, "ext/hello:1.0")
	mb := float64(m.p.r.Entry.Layer.Size) / 1e6
	var one, par, dir time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for _, run := range []struct {
			t    oci.Target
			conc int
			d    *time.Duration
		}{{tg, 1, &one}, {tg, 0, &par}, {direct, 0, &dir}} {
			start := time.Now()
			d, err := oci.Download(ctx, run.t, &m.p.r.Entry, oci.DownloadOptions{Dir: b.TempDir(), Concurrency: run.conc})
			if err != nil {
				b.Fatal(err)
			}
			*run.d += time.Since(start)
			os.Remove(d.Path)
		}
	}
	b.StopTimer()
	if m.served.Bytes() != 0 {
		b.Fatalf("the origin sent %d bytes", m.served.Bytes())
	}
	n := float64(b.N)
	b.ReportMetric(link.Rate/1e6, "link-cap-MB/s")
	b.ReportMetric(link.PerConn/1e6, "conn-cap-MB/s")
	b.ReportMetric(mb*n/one.Seconds(), "mirror-one-stream-MB/s")
	b.ReportMetric(mb*n/par.Seconds(), "mirror-parallel-MB/s")
	b.ReportMetric(mb*n/dir.Seconds(), "direct-parallel-MB/s")
	b.ReportMetric(one.Seconds()/par.Seconds(), "parallel-ratio")
}
