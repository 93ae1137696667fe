package ingest

import (
	"context"
	"crypto/sha256"
	"os"
	"path/filepath"
	"syscall"
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

// BenchmarkDurableWrite writes 512 MiB the way a download does (a writing
// and a hashing goroutine, then fsync) onto the disk with each flushing
// policy, side by side, next to its floors: sha256 of the same bytes, the
// same write and hash into tmpfs (no disk), and the disk alone (plain
// writes, one fsync at the end, no hash). The policies: fdatasync every
// 16 MiB (sessions 2-3), only at the end, and adaptive (each flush sized
// to take about 50 ms at the rate the last one showed, 16-256 MiB).
//
//	go test -run '^$' -bench DurableWrite -benchtime 3x ./ingest/
func BenchmarkDurableWrite(b *testing.B) {
	const size = 512 << 20
	data := blob(size)
	diskDir := b.TempDir()
	shm := "/dev/shm"
	if fi, err := os.Stat(shm); err != nil || !fi.IsDir() {
		b.Skip("no /dev/shm")
	}
	write := func(b *testing.B, dir string, hash bool) time.Duration {
		f, err := os.CreateTemp(dir, "durable-bench-")
		if err != nil {
			b.Fatal(err)
		}
		defer os.Remove(f.Name())
		defer f.Close()
		syscall.Sync()
		start := time.Now()
		want := digest.Digest("")
		w, err := New(f, size, want)
		if err != nil {
			b.Fatal(err)
		}
		done := make(chan struct{})
		go func() {
			defer close(done)
			if hash {
				for off := 0; off < size; off += 1 << 20 {
					w.HashAt(data[off:off+1<<20], int64(off))
				}
			}
		}()
		for off := 0; off < size; off += 1 << 20 {
			if _, err := w.WriteAt(data[off:off+1<<20], int64(off)); err != nil {
				b.Fatal(err)
			}
		}
		<-done
		if err := w.Finish(); err != nil {
			b.Fatal(err)
		}
		if err := w.Sync(); err != nil {
			b.Fatal(err)
		}
		w.Close()
		return time.Since(start)
	}
	plain := func(b *testing.B) time.Duration {
		f, err := os.CreateTemp(diskDir, "plain-bench-")
		if err != nil {
			b.Fatal(err)
		}
		defer os.Remove(f.Name())
		defer f.Close()
		syscall.Sync()
		start := time.Now()
		for off := 0; off < size; off += 1 << 20 {
			if _, err := f.Write(data[off : off+1<<20]); err != nil {
				b.Fatal(err)
			}
		}
		if err := f.Sync(); err != nil {
			b.Fatal(err)
		}
		return time.Since(start)
	}
	type variant struct {
		name string
		run  func(b *testing.B) time.Duration
	}
	policy := func(first int64, target time.Duration, max int64) func(b *testing.B) time.Duration {
		return func(b *testing.B) time.Duration {
			defer SetFlushPolicy(first, target, max)()
			return write(b, diskDir, true)
		}
	}
	variants := []variant{
		{"sha256", func(*testing.B) time.Duration {
			start := time.Now()
			h := sha256.New()
			h.Write(data)
			h.Sum(nil)
			return time.Since(start)
		}},
		{"tmpfs", func(b *testing.B) time.Duration { return write(b, shm, true) }},
		{"disk-write+fsync", plain},
		{"sync-16MiB", policy(16<<20, 0, 16<<20)},
		{"sync-at-end", policy(1<<62, 0, 1<<62)},
		{"sync-adaptive", policy(16<<20, 50*time.Millisecond, 256<<20)},
	}
	total := make([]time.Duration, len(variants))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for j := range variants {
			k := (j + i) % len(variants) // who goes first rotates
			total[k] += variants[k].run(b)
		}
	}
	b.StopTimer()
	mb := float64(size) * float64(b.N) / 1e6
	for k, v := range variants {
		b.ReportMetric(mb/total[k].Seconds(), v.name+"-MB/s")
	}
}
