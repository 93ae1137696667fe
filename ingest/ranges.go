package ingest

import "sort"

// Range is the bytes [Off, End) of a blob.
type Range struct{ Off, End int64 }

// Ranges is a set of byte ranges, sorted, disjoint and not touching
// (adjacent ranges are merged).
type Ranges []Range

// Add inserts [off, end). Bytes written in order only ever extend the last
// range, so the common case costs nothing.
func (rs *Ranges) Add(off, end int64) {
	if off >= end {
		return
	}
	s := *rs
	if n := len(s); n > 0 && off >= s[n-1].Off && off <= s[n-1].End {
		s[n-1].End = max(s[n-1].End, end)
		return
	}
	// The first range that ends at or after off, and the first that starts
	// after end: everything in between merges with [off, end).
	i := sort.Search(len(s), func(i int) bool { return s[i].End >= off })
	j := sort.Search(len(s), func(i int) bool { return s[i].Off > end })
	if i < j {
		off, end = min(off, s[i].Off), max(end, s[j-1].End)
	}
	out := append(append(append(make(Ranges, 0, len(s)-(j-i)+1), s[:i]...), Range{off, end}), s[j:]...)
	*rs = out
}

// Prefix is where the bytes written from 0 on stop.
func (rs Ranges) Prefix() int64 {
	if len(rs) == 0 || rs[0].Off != 0 {
		return 0
	}
	return rs[0].End
}

// Missing returns what [0, size) lacks.
func (rs Ranges) Missing(size int64) []Range {
	var out []Range
	at := int64(0)
	for _, r := range rs {
		if r.Off >= size {
			break
		}
		if r.Off > at {
			out = append(out, Range{at, r.Off})
		}
		at = max(at, r.End)
	}
	if at < size {
		out = append(out, Range{at, size})
	}
	return out
}

// Total is how many bytes the set holds.
func (rs Ranges) Total() int64 {
	var n int64
	for _, r := range rs {
		n += r.End - r.Off
	}
	return n
}

// Covers reports whether [off, end) is in the set.
func (rs Ranges) Covers(off, end int64) bool {
	if off >= end {
		return true
	}
	i := sort.Search(len(rs), func(i int) bool { return rs[i].End > off })
	return i < len(rs) && rs[i].Off <= off && rs[i].End >= end
}
