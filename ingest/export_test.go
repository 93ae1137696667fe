package ingest

import "time"

// SetFlushPolicy sets how often the flusher syncs, for benchmarks: every
// first bytes, or adapted so a flush takes about target (at most max).
func SetFlushPolicy(first int64, target time.Duration, max int64) func() {
	old := flushPolicy
	flushPolicy = syncPolicy{first: first, target: target, max: max}
	return func() { flushPolicy = old }
}
