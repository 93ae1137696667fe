package oci_test

import (
	"testing"

	"github.com/sysext/sysext/ingest"
	"github.com/sysext/sysext/oci"
)

// A stream killed with several writes in flight leaves holes just before
// the rest of the blob: the next run streams on from the first hole. Holes
// further apart, or a gap that does not reach the end, are a stopped
// parallel download's, fetched as ranges.
func TestStreamHoles(t *testing.T) {
	const mib = 1 << 20
	size := int64(100 * mib)
	for _, tc := range []struct {
		name    string
		missing []ingest.Range
		want    bool
	}{
		{"one range to the end", []ingest.Range{{Off: 50 * mib, End: size}}, false},
		{"a hole, then the rest", []ingest.Range{{Off: 47 * mib, End: 48 * mib}, {Off: 50 * mib, End: size}}, true},
		{"two holes, then the rest", []ingest.Range{{Off: 44 * mib, End: 45 * mib}, {Off: 47 * mib, End: 48 * mib}, {Off: 50 * mib, End: size}}, true},
		{"holes far apart", []ingest.Range{{Off: 10 * mib, End: 11 * mib}, {Off: 50 * mib, End: size}}, false},
		{"not to the end", []ingest.Range{{Off: 47 * mib, End: 48 * mib}, {Off: 50 * mib, End: 60 * mib}}, false},
	} {
		if got := oci.StreamHoles(tc.missing, size); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}
