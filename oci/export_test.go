package oci

import (
	"os"
	"testing"
	"time"

	"github.com/sysext/sysext/ingest"
)

// DurableWrite writes size bytes (src repeated) to a new file at path the
// way Download writes a layer, without the network and the hash: reserve,
// write through the page cache with writeback started and fdatasync as it
// goes (ingest.Writer), fsync at the end. The benchmarks take it as the
// disk's floor for a durable fetch.
func DurableWrite(path string, src []byte, size int64) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	w, err := ingest.New(f, size, "")
	if err != nil {
		return err
	}
	defer w.Close()
	for off := int64(0); off < size; off += int64(len(src)) {
		if _, err := w.WriteAt(src[:min(int64(len(src)), size-off)], off); err != nil {
			return err
		}
	}
	if err := w.Finish(); err != nil {
		return err
	}
	return f.Sync()
}

var _ Writer = (*ingest.Writer)(nil)

// ForceParallelFor is ForceParallel with an undo, for benchmarks.
func ForceParallelFor(t testing.TB) func() {
	old := parallelTuning
	parallelTuning = tuning{force: true, minRest: 1, window: time.Millisecond, ramp: time.Hour, gain: 1.25, minLevel: defaultConcurrency}
	return func() { parallelTuning = old }
}

// ForceParallel makes downloads from a registry hand over to parallel
// ranges at once, with every connection, until the test ends.
func ForceParallel(t testing.TB) { t.Cleanup(ForceParallelFor(t)) }

// StreamHoles is streamHoles, for tests.
var StreamHoles = streamHoles
