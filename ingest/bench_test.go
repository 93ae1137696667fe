package ingest

import (
	"context"
	"crypto/sha256"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

// BenchmarkRecordCost writes 256 MiB in 1 MiB pieces the way a download
// does (a writing and a hashing goroutine) with the resumable record
// (Open) and without (New), side by side, next to the floor: sha256 of the
// same bytes. Into /dev/shm when it is a tmpfs, so the disk does not hide
// the record's own cost.
//
//	go test -run '^$' -bench RecordCost -benchtime 3x ./ingest/
func BenchmarkRecordCost(b *testing.B) {
	const size = 256 << 20
	data := blob(size)
	want := digest.FromBytes(data)
	parent := "/dev/shm"
	if fi, err := os.Stat(parent); err != nil || !fi.IsDir() {
		parent = b.TempDir()
	}
	run := func(b *testing.B, open func(dir string) (*Writer, error)) time.Duration {
		dir, err := os.MkdirTemp(parent, "ingest-bench-")
		if err != nil {
			b.Fatal(err)
		}
		defer os.RemoveAll(dir)
		start := time.Now()
		w, err := open(dir)
		if err != nil {
			b.Fatal(err)
		}
		done := make(chan struct{})
		go func() {
			defer close(done)
			for off := 0; off < size; off += 1 << 20 {
				w.HashAt(data[off:off+1<<20], int64(off))
			}
		}()
		for off := 0; off < size; off += 1 << 20 {
			if _, err := w.WriteAt(data[off:off+1<<20], int64(off)); err != nil {
				b.Fatal(err)
			}
		}
		<-done
		if got, err := w.Sum(context.Background()); err != nil || got != want {
			b.Fatal(got, err)
		}
		if err := w.Sync(); err != nil {
			b.Fatal(err)
		}
		w.Close()
		return time.Since(start)
	}
	withRecord := func(dir string) (*Writer, error) {
		return Open(context.Background(), filepath.Join(dir, "in"), size, want)
	}
	var files []*os.File
	without := func(dir string) (*Writer, error) {
		f, err := os.Create(filepath.Join(dir, "out"))
		if err != nil {
			return nil, err
		}
		files = append(files, f)
		return New(f, size, want)
	}
	var rec, none, hash time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if i%2 == 0 {
			rec += run(b, withRecord)
			none += run(b, without)
		} else {
			none += run(b, without)
			rec += run(b, withRecord)
		}
		start := time.Now()
		h := sha256.New()
		h.Write(data)
		h.Sum(nil)
		hash += time.Since(start)
	}
	b.StopTimer()
	for _, f := range files {
		f.Close()
	}
	mb := float64(size) * float64(b.N) / 1e6
	b.ReportMetric(mb/hash.Seconds(), "sha256-MB/s")
	b.ReportMetric(mb/none.Seconds(), "no-record-MB/s")
	b.ReportMetric(mb/rec.Seconds(), "record-MB/s")
	b.ReportMetric(none.Seconds()/rec.Seconds(), "record/no-record")
}
