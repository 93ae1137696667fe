package oci_test

import (
	"context"
	"crypto/rand"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sysext/sysext/ingest"
	"github.com/sysext/sysext/oci"
	"github.com/sysext/sysext/oci/ocitest"
)

// countingWriter counts the bytes the download hashed from memory (HashAt
// in order); the rest were hashed from the file (HashTo, Sum).
type countingWriter struct {
	*ingest.Writer
	fromMemory atomic.Int64
}

func (c *countingWriter) HashAt(p []byte, off int64) {
	if off == c.Writer.Hashed() {
		c.fromMemory.Add(int64(len(p)))
	}
	c.Writer.HashAt(p, off)
}

// What the parallel path costs where it is not needed: 256 MiB from an
// in-process registry into tmpfs, one stream against parallel ranges from
// the start (8 connections), side by side; how much of the parallel
// download was hashed from memory and how much read back from the page
// cache; and the read-back's own floor (reading the file).
//
//	go test -run '^$' -bench ParallelCost -benchtime 3x ./oci/
func BenchmarkParallelCost(b *testing.B) {
	const size = 256 << 20
	shm := tmpfsDir(b, size)
	reg := ocitest.NewOlareg(b)
	payload := make([]byte, size)
	rand.Read(payload)
	file := ocitest.Squashfs(b, ocitest.Meta("big", "1", "x86-64"), payload)
	payload = nil
	tg, ref := reg.Open(b, "ext/big:1")
	ctx := context.Background()
	if _, err := oci.Push(ctx, tg, ref, []string{file}, oci.PushOptions{}); err != nil {
		b.Fatal(err)
	}
	r, err := oci.Resolve(ctx, tg, ref, "x86-64")
	if err != nil {
		b.Fatal(err)
	}
	layer := r.Entry.Layer
	run := func(parallel bool) (time.Duration, int64) {
		dir, err := os.MkdirTemp(shm, "parallel-bench-")
		if err != nil {
			b.Fatal(err)
		}
		defer os.RemoveAll(dir)
		f, err := os.Create(filepath.Join(dir, "out"))
		if err != nil {
			b.Fatal(err)
		}
		defer f.Close()
		start := time.Now()
		w, err := ingest.New(f, layer.Size, layer.Digest)
		if err != nil {
			b.Fatal(err)
		}
		cw := &countingWriter{Writer: w}
		opts := oci.DownloadOptions{Into: cw, Concurrency: 1}
		if parallel {
			opts.Concurrency = 8
		}
		if _, err := oci.Download(ctx, tg, &r.Entry, opts); err != nil {
			b.Fatal(err)
		}
		d := time.Since(start)
		w.Close()
		return d, cw.fromMemory.Load()
	}
	undo := oci.ForceParallelFor(b)
	var seq, par, readBack time.Duration
	var fromMemory int64
	run(false)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for j := 0; j < 2; j++ {
			if (i+j)%2 == 0 {
				d, _ := run(false)
				seq += d
			} else {
				d, m := run(true)
				par += d
				fromMemory += m
			}
		}
		readBack += readFile(b, file)
	}
	b.StopTimer()
	undo()
	mb := float64(layer.Size) * float64(b.N) / 1e6
	b.ReportMetric(mb/seq.Seconds(), "one-stream-MB/s")
	b.ReportMetric(mb/par.Seconds(), "parallel-MB/s")
	b.ReportMetric(seq.Seconds()/par.Seconds(), "parallel/one-stream")
	b.ReportMetric(float64(fromMemory)/float64(layer.Size*int64(b.N)), "parallel-hashed-from-memory")
	b.ReportMetric(mb/readBack.Seconds(), "read-back-MB/s")
}

// readFile reads path (in the page cache) into nothing.
func readFile(b *testing.B, path string) time.Duration {
	f, err := os.Open(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	start := time.Now()
	for {
		_, err := f.Read(buf)
		if err != nil {
			break
		}
	}
	return time.Since(start)
}
