package oci_test

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/sysext/sysext/oci"
	"github.com/sysext/sysext/oci/ocitest"
)

// FetchRanges through mirrors: the ranges come from the first source that
// serves them; a mirror that fails hands what it did not write to the
// next (the origin), in one line; a mirror that answers the first range
// with the whole blob (a pull-through cache that does not hold it yet)
// is read once, to its end, and serves every range, with no other
// request. The bytes written are the blob's in every case. Before, a
// range was never fetched through mirrors (ErrRangeUnsupported).
func TestFetchRangesThroughMirrors(t *testing.T) {
	for _, tc := range []struct {
		name   string
		fault  ocitest.Fault
		noCopy bool // the mirror lacks the image
		// what the origin may send, of the ranges' total
		origin   func(total int64) (int64, int64)
		lines    []string // what each line of the log says
		requests int64    // blob GETs the mirror answers (0: not checked)
	}{
		{name: "served", origin: func(int64) (int64, int64) { return 0, 0 }},
		{name: "cut beyond the retries", fault: ocitest.CutBlobRanged(20000, -1),
			origin: func(total int64) (int64, int64) { return 1, total - 1 }, lines: []string{"trying"}},
		{name: "whole answer", fault: ocitest.IgnoreRange(-1),
			origin: func(int64) (int64, int64) { return 0, 0 }, lines: []string{"answered with the whole blob"}, requests: 1},
		{name: "whole answer cut", fault: func(w http.ResponseWriter, r *http.Request, next http.Handler) bool {
			// The whole blob, cut in the third range: the rest of it and
			// the last byte come from the origin.
			return ocitest.IgnoreRange(-1)(w, r, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if !ocitest.CutBlob(120000, -1)(w, r, next) {
					next.ServeHTTP(w, r)
				}
			}))
		}, origin: func(int64) (int64, int64) { return 40001, 40001 }, lines: []string{"answered with the whole blob", "trying"}, requests: 1},
		{name: "lacks the blob", noCopy: true,
			origin: func(total int64) (int64, int64) { return total, total }, lines: []string{"trying"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := newMirrored(t, "")
			var served ocitest.Served
			var mir *ocitest.Registry
			faults := []ocitest.Fault{served.Fault()}
			if tc.fault != nil {
				faults = append(faults, tc.fault)
			}
			if tc.noCopy {
				mir = ocitest.NewOlareg(t, faults...)
			} else {
				mir = mirrorOf(t, m, faults...)
			}
			m = withMirrors(t, m, mir.Host)
			served.Reset()
			tg, err := oci.Open(context.Background(), m.p.ref, m.opts)
			if err != nil {
				t.Fatal(err)
			}
			layer := m.p.r.Entry.Layer
			rs := []oci.Range{{0, 1}, {4096, 50000}, {100000, 60000}, {layer.Size - 1, 1}}
			var total int64
			for _, r := range rs {
				total += r.Len
			}
			out := &memAt{b: make([]byte, layer.Size)}
			if _, err := oci.FetchRanges(context.Background(), tg, layer, rs, out, oci.RangeOptions{Concurrency: 4, MaxRetries: 1, RetryWait: 1}); err != nil {
				t.Fatalf("%v\n%s", err, m.log())
			}
			checkRanges(t, out.b, pushedBlob(t, m.p), rs)
			m.served.Settle()
			served.Settle()
			t.Logf("the origin sent %d, the mirror %d in %d requests, of %d; log:\n%s", m.served.Bytes(), served.Bytes(), served.Requests(), total, m.log())
			if lo, hi := tc.origin(total); m.served.Bytes() < lo || m.served.Bytes() > hi {
				t.Fatalf("the origin sent %d bytes, want %d to %d", m.served.Bytes(), lo, hi)
			}
			if tc.requests > 0 && served.Requests() != tc.requests {
				t.Fatalf("the mirror answered %d blob GETs, want %d", served.Requests(), tc.requests)
			}
			log := m.log()
			n := 0
			if log != "" {
				n = strings.Count(log, "\n") + 1
			}
			for _, l := range tc.lines {
				if strings.Count(log, l) != 1 {
					n = -1
				}
			}
			if n != len(tc.lines) {
				t.Fatalf("want one line saying each of %q:\n%s", tc.lines, log)
			}
			by := servedBy(oci.SourceEvents(tg))["layer"]
			if want := map[bool]string{true: m.origin.Host, false: mir.Host}[len(tc.lines) > 0 && tc.lines[len(tc.lines)-1] == "trying"]; !strings.HasPrefix(by, want) {
				t.Fatalf("layer served by %q, want %s", by, want)
			}
		})
	}
}
