package delta

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"testing"
	"testing/iotest"
)

func randomBytes(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, seed))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func build(t testing.TB, data []byte) *Index {
	t.Helper()
	ix, err := Build(bytes.NewReader(data), Default)
	if err != nil {
		t.Fatal(err)
	}
	return ix
}

func TestNewChunkerRefusesBadSizes(t *testing.T) {
	for _, s := range [][3]int{{0, 64 << 10, 256 << 10}, {1, 100, 400}, {1, 128, 512}, {16 << 10, 64 << 10, 32 << 10}, {128 << 10, 64 << 10, 256 << 10}, {1, 1 << 20, 32 << 20}} {
		if _, err := NewChunker(s[0], s[1], s[2]); err == nil {
			t.Errorf("NewChunker%v accepted", s)
		}
	}
}

// The format pins the chunker: the gear table and the cut points of a
// known input must never change, or nodes and publishers disagree.
func TestChunkerIsTheFormat(t *testing.T) {
	s := sha256.Sum256(append([]byte("sysext-gear"), 0x41))
	if gear[0x41] != binary.LittleEndian.Uint64(s[:8]) {
		t.Fatalf("gear[0x41] = %#x, not SHA-256(\"sysext-gear\" 0x41)[0:8]", gear[0x41])
	}
	ix := build(t, randomBytes(4<<20, 7))
	b, err := ix.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	// Recorded when the format was fixed (format version 1); the research's
	// chunker (internal/deltabench, 64 KiB) cut the same places.
	const want = "3e98aef8f98aeffb743c332e9f313a179dc858b3555d6da9779101750fbcaebb"
	if got := fmt.Sprintf("%x", sha256.Sum256(b)); got != want {
		t.Logf("lengths: %v", lengths(ix))
		t.Fatalf("the index of the reference input has digest %s, want %s: the chunker or the encoding changed (that is a new format version)", got, want)
	}
}

func lengths(ix *Index) []int64 {
	var out []int64
	for _, c := range ix.Chunks {
		out = append(out, c.Len)
	}
	return out
}

func TestChunkSizes(t *testing.T) {
	data := randomBytes(16<<20, 1)
	ix := build(t, data)
	var total int64
	for i, c := range ix.Chunks {
		total += c.Len
		if c.Len > MaxSize || (c.Len < MinSize && i != len(ix.Chunks)-1) {
			t.Fatalf("chunk %d has %d bytes, outside [%d, %d]", i, c.Len, MinSize, MaxSize)
		}
		if c.Sum != sha256.Sum256(data[c.Off:c.Off+c.Len]) {
			t.Fatalf("chunk %d: wrong digest", i)
		}
	}
	if total != int64(len(data)) || ix.Size != total || ix.Digest != sha256.Sum256(data) {
		t.Fatalf("chunks cover %d bytes of %d; size %d", total, len(data), ix.Size)
	}
	if mean := total / int64(len(ix.Chunks)); mean < AvgSize/2 || mean > 2*AvgSize {
		t.Errorf("mean chunk %d bytes", mean)
	}
}

// Split gives the same chunks whatever the reader's read sizes: its
// buffer boundaries never move a cut.
func TestSplitIsIndependentOfReads(t *testing.T) {
	data := randomBytes(5<<20+12345, 2)
	want := Default.Lengths(data)
	for name, r := range map[string]io.Reader{
		"whole":    bytes.NewReader(data),
		"one byte": iotest.OneByteReader(bytes.NewReader(data)),
		"half":     iotest.HalfReader(bytes.NewReader(data)),
	} {
		var got []int64
		if err := Default.Split(r, func(off int64, b []byte) error { got = append(got, int64(len(b))); return nil }); err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("%s: %d chunks, want %d", name, len(got), len(want))
		}
	}
	boom := errors.New("boom")
	if err := Default.Split(iotest.TimeoutReader(bytes.NewReader(data)), func(int64, []byte) error { return nil }); err == nil {
		t.Error("a read error was not returned")
	}
	if err := Default.Split(bytes.NewReader(data), func(int64, []byte) error { return boom }); !errors.Is(err, boom) {
		t.Errorf("fn's error: %v", err)
	}
}

// An insertion near the start changes only the chunks around it: the cut
// points resynchronise.
func TestChunksResynchronise(t *testing.T) {
	old := randomBytes(8<<20, 3)
	new := append(append(append([]byte{}, old[:1000]...), []byte("inserted bytes")...), old[1000:]...)
	p := MakePlan(build(t, new), lookup(build(t, old)), nil, PlanOptions{})
	if p.Fetched > 2*MaxSize {
		t.Fatalf("an insertion of 14 bytes left %d bytes to fetch", p.Fetched)
	}
}

func lookup(ixs ...*Index) Local {
	m := map[[sha256.Size]byte][2]int64{}
	for src, ix := range ixs {
		for _, c := range ix.Chunks {
			if _, ok := m[c.Sum]; !ok {
				m[c.Sum] = [2]int64{int64(src), c.Off}
			}
		}
	}
	return func(s [sha256.Size]byte) (int, int64, bool) {
		l, ok := m[s]
		return int(l[0]), l[1], ok
	}
}

func TestIndexRoundTrip(t *testing.T) {
	for _, n := range []int{0, 1, MinSize, 3<<20 + 17} {
		data := randomBytes(n, 4)
		ix := build(t, data)
		b, err := ix.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		if len(b) != headerSize+recordSize*len(ix.Chunks) {
			t.Fatalf("%d bytes for %d chunks", len(b), len(ix.Chunks))
		}
		got, err := Parse(b)
		if err != nil {
			t.Fatalf("%d bytes: %v", n, err)
		}
		if fmt.Sprint(got.Chunks) != fmt.Sprint(ix.Chunks) || got.Size != ix.Size || got.Digest != ix.Digest || !got.Same(Default) {
			t.Fatalf("%d bytes: round trip changed the index", n)
		}
		at, err := BuildAt(bytes.NewReader(data), int64(n), Default)
		if err != nil || fmt.Sprint(at) != fmt.Sprint(ix) {
			t.Fatalf("%d bytes: BuildAt gives another index (%v)", n, err)
		}
		if err := got.Check(int64(n), fmt.Sprintf("sha256:%x", sha256.Sum256(data))); err != nil {
			t.Fatal(err)
		}
		if err := got.Check(int64(n)+1, fmt.Sprintf("sha256:%x", sha256.Sum256(data))); !errors.Is(err, ErrInvalid) {
			t.Fatalf("another size: %v", err)
		}
		if err := got.Check(int64(n), fmt.Sprintf("sha256:%x", sha256.Sum256(append(data, 0)))); !errors.Is(err, ErrInvalid) {
			t.Fatalf("another digest: %v", err)
		}
	}
}

// Each crafted index is refused with ErrInvalid, never a panic.
func TestParseRefuses(t *testing.T) {
	good, err := build(t, randomBytes(1<<20, 5)).MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	le := binary.LittleEndian
	edit := func(f func(b []byte) []byte) []byte { return f(append([]byte(nil), good...)) }
	cases := map[string][]byte{
		"empty":          nil,
		"short header":   good[:63],
		"magic":          edit(func(b []byte) []byte { b[0] = 'X'; return b }),
		"version 2":      edit(func(b []byte) []byte { b[4] = 2; return b }),
		"hash":           edit(func(b []byte) []byte { b[5] = 2; return b }),
		"chunker":        edit(func(b []byte) []byte { b[6] = 9; return b }),
		"reserved":       edit(func(b []byte) []byte { b[7] = 1; return b }),
		"avg not pow2":   edit(func(b []byte) []byte { le.PutUint32(b[12:], 65000); return b }),
		"min 0":          edit(func(b []byte) []byte { le.PutUint32(b[8:], 0); return b }),
		"max huge":       edit(func(b []byte) []byte { le.PutUint32(b[16:], 1<<30); return b }),
		"count high":     edit(func(b []byte) []byte { le.PutUint32(b[60:], le.Uint32(b[60:])+1); return b }),
		"count low":      edit(func(b []byte) []byte { le.PutUint32(b[60:], le.Uint32(b[60:])-1); return b }),
		"torn record":    good[:len(good)-1],
		"size larger":    edit(func(b []byte) []byte { le.PutUint64(b[20:], le.Uint64(b[20:])+1); return b }),
		"size smaller":   edit(func(b []byte) []byte { le.PutUint64(b[20:], le.Uint64(b[20:])-1); return b }),
		"size huge":      edit(func(b []byte) []byte { le.PutUint64(b[20:], 1<<63); return b }),
		"chunk too long": edit(func(b []byte) []byte { le.PutUint32(b[headerSize:], MaxSize+1); return b }),
		"chunk short":    edit(func(b []byte) []byte { le.PutUint32(b[headerSize:], MinSize-1); return b }),
		"chunk zero":     edit(func(b []byte) []byte { le.PutUint32(b[len(b)-recordSize:], 0); return b }),
		"too large":      make([]byte, MaxIndexSize+1),
		"many chunks for the size": func() []byte {
			b := make([]byte, headerSize+recordSize*3)
			copy(b, good[:headerSize])
			le.PutUint64(b[20:], 3)
			le.PutUint32(b[60:], 3)
			for i := range 3 {
				le.PutUint32(b[headerSize+i*recordSize:], 1)
			}
			return b
		}(),
	}
	for name, b := range cases {
		if _, err := Parse(b); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestPlan(t *testing.T) {
	a := randomBytes(4<<20, 10)
	b := randomBytes(4<<20, 11)
	// new: a's first half, 2 MiB of b, a's first half again, a's second
	// half.
	new := append(append(append(append([]byte{}, a[:2<<20]...), b[:2<<20]...), a[:2<<20]...), a[2<<20:]...)
	ix := build(t, new)
	have := build(t, a)
	p := MakePlan(ix, lookup(have), nil, PlanOptions{})
	if p.Reused+p.Fetched+p.Held != ix.Size {
		t.Fatalf("plan covers %d+%d+%d of %d", p.Reused, p.Fetched, p.Held, ix.Size)
	}
	if p.Fetched < 2<<20 || p.Fetched > 2<<20+4*MaxSize {
		t.Fatalf("fetches %d bytes for 2 MiB of new content", p.Fetched)
	}
	var fetched int64
	for _, r := range p.Ranges {
		fetched += r.Len
		if r.Len > DefaultMaxRange {
			t.Fatalf("range %+v over the maximum", r)
		}
	}
	if fetched != p.Fetched || len(p.Ranges) > 3 {
		t.Fatalf("ranges %v for %d bytes", p.Ranges, p.Fetched)
	}
	// Every fetched chunk lies in exactly one range; nothing else does.
	for i, c := range ix.Chunks {
		in := 0
		for _, r := range p.Ranges {
			if c.Off >= r.Off && c.Off+c.Len <= r.Off+r.Len {
				in++
			} else if c.Off < r.Off+r.Len && r.Off < c.Off+c.Len {
				t.Fatalf("chunk %d straddles range %+v", i, r)
			}
		}
		if (p.Steps[i].Action == Fetch) != (in == 1) {
			t.Fatalf("chunk %d: %s, in %d ranges", i, p.Steps[i].Action, in)
		}
		if s := p.Steps[i]; s.Action == Take && !bytes.Equal(a[s.SrcOff:s.SrcOff+c.Len], new[c.Off:c.Off+c.Len]) {
			t.Fatalf("chunk %d taken from the wrong place", i)
		}
	}

	// Nothing local: one range per 8 MiB, the whole image.
	p = MakePlan(ix, nil, nil, PlanOptions{})
	if p.Fetched+p.Reused != ix.Size || len(p.Ranges) != 2 {
		t.Fatalf("nothing held: %d ranges, %d fetched, %d reused (repeats) of %d", len(p.Ranges), p.Fetched, p.Reused, ix.Size)
	}
	// The repeated 2 MiB of a are copied from the new file, not fetched twice.
	if p.Reused < 2<<20-4*MaxSize {
		t.Fatalf("repeats: %d bytes copied", p.Reused)
	}

	// A resumed download: what is written is held.
	written := ix.Chunks[len(ix.Chunks)/2].Off
	p = MakePlan(ix, nil, func(off, n int64) bool { return off+n <= written }, PlanOptions{Gap: -1})
	if p.Held != written || p.Fetched+p.Reused+p.Held != ix.Size {
		t.Fatalf("held %d of %d written", p.Held, written)
	}
}

// Gaps up to Gap are fetched with their neighbours; larger ones split the
// ranges.
func TestPlanCoalesces(t *testing.T) {
	c, err := NewChunker(1024, 4096, 16384)
	if err != nil {
		t.Fatal(err)
	}
	ix := &Index{Chunker: c}
	for i := range 10 {
		ix.Chunks = append(ix.Chunks, Chunk{Off: int64(i) * 4096, Len: 4096, Sum: [32]byte{byte(i)}})
	}
	ix.Size = 10 * 4096
	held := map[byte]bool{1: true, 4: true, 5: true, 6: true}
	local := func(s [32]byte) (int, int64, bool) { return 0, 0, held[s[0]] }
	for _, tc := range []struct {
		gap    int64
		ranges string
	}{
		{-1, "[{0 4096} {8192 8192} {28672 12288}]"},
		{4096, "[{0 16384} {28672 12288}]"},
		{3 * 4096, "[{0 40960}]"},
	} {
		p := MakePlan(ix, local, nil, PlanOptions{Gap: tc.gap})
		if got := fmt.Sprint(p.Ranges); got != tc.ranges {
			t.Errorf("gap %d: ranges %s, want %s", tc.gap, got, tc.ranges)
		}
	}
}

func BenchmarkChunker(b *testing.B) {
	data := randomBytes(64<<20, 4)
	b.Run("cut", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		for b.Loop() {
			_ = Default.Lengths(data)
		}
	})
	b.Run("cut-bytewise", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		for b.Loop() {
			for off := 0; off < len(data); {
				off += Default.cutBytewise(data[off:])
			}
		}
	})
	b.Run("index", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		for b.Loop() {
			if _, err := Build(bytes.NewReader(data), Default); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("index-at", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		for b.Loop() {
			if _, err := BuildAt(bytes.NewReader(data), int64(len(data)), Default); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("sha256-floor", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		for b.Loop() {
			_ = sha256.Sum256(data)
		}
	})
}

// BuildAtNotify tells the whole image's digest once, before it returns,
// the same as the index's; a short or failing read tells none.
func TestBuildAtNotify(t *testing.T) {
	data := randomBytes(3<<20, 9)
	var sums [][sha256.Size]byte
	ix, err := BuildAtNotify(bytes.NewReader(data), int64(len(data)), Default, func(s [sha256.Size]byte) { sums = append(sums, s) })
	if err != nil {
		t.Fatal(err)
	}
	if len(sums) != 1 || sums[0] != sha256.Sum256(data) || ix.Digest != sums[0] {
		t.Fatalf("digests told %x, index %x, want one: %x", sums, ix.Digest, sha256.Sum256(data))
	}
	for _, tc := range []struct {
		name string
		ra   io.ReaderAt
	}{
		{"short", bytes.NewReader(data[:len(data)-1])},
		{"failing", failingReaderAt{}},
	} {
		told := false
		if _, err := BuildAtNotify(tc.ra, int64(len(data)), Default, func([sha256.Size]byte) { told = true }); err == nil || told {
			t.Errorf("%s: err %v, digest told: %v; want an error and no digest", tc.name, err, told)
		}
	}
}

type failingReaderAt struct{}

func (failingReaderAt) ReadAt([]byte, int64) (int, error) { return 0, errors.New("disk error") }

// cutBytewise is Cut as format version 1 defines it, one byte at a time:
// the reference the unrolled Cut must match.
func (c Chunker) cutBytewise(data []byte) int {
	n := len(data)
	if n <= c.Min {
		return n
	}
	n = min(n, c.Max)
	var fp uint64
	for i := c.Min; i < n; i++ {
		fp = fp<<1 + gear[data[i]]
		mask := c.maskL
		if i < c.Avg {
			mask = c.maskS
		}
		if fp&mask == 0 {
			return i + 1
		}
	}
	return n
}

// Cut cuts where the byte-at-a-time definition does, for every chunker
// shape (small ones cut often, so every position within a round of the
// unrolled loop ends a chunk) and at every tail length.
func TestCutMatchesBytewise(t *testing.T) {
	data := randomBytes(8<<20, 11)
	// Low-entropy stretches too: runs of one byte, a repeated pattern.
	for i := 1 << 20; i < 2<<20; i++ {
		data[i] = 0
	}
	for i := 3 << 20; i < 4<<20; i++ {
		data[i] = byte(i % 7)
	}
	ends := map[int]int{}
	for _, shape := range [][3]int{{MinSize, AvgSize, MaxSize}, {1, 256, 256}, {64, 256, 1024}, {100, 512, 4099}, {3, 1024, 65537}, {1000, 1024, 1025}} {
		c, err := NewChunker(shape[0], shape[1], shape[2])
		if err != nil {
			t.Fatal(err)
		}
		for off := 0; off < len(data); {
			got, want := c.Cut(data[off:]), c.cutBytewise(data[off:])
			if got != want {
				t.Fatalf("chunker %v at %d: cut %d, want %d", shape, off, got, want)
			}
			if c.Min%4 == 0 && got > c.Min && got < c.Max {
				ends[got%4]++ // rounds start at multiples of 4 then
			}
			off += got
		}
		for tail := 0; tail < 2*c.Max && tail < 5000; tail++ {
			if got, want := c.Cut(data[:tail]), c.cutBytewise(data[:tail]); got != want {
				t.Fatalf("chunker %v, %d bytes: cut %d, want %d", shape, tail, got, want)
			}
		}
	}
	if len(ends) != 4 {
		t.Errorf("cuts ended only at round positions %v: want all four", ends)
	}
}
