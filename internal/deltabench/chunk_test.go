package deltabench

import (
	"bytes"
	"math/rand/v2"
	"testing"
)

func randomBytes(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, seed))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// An insertion near the start: CDC finds the bytes after it again (package
// delta tests that alone), fixed blocks do not, rolling matching does.
func TestDesignsAfterAnInsertion(t *testing.T) {
	old := randomBytes(4<<20, 2)
	new := append(append(append([]byte{}, old[:1000]...), []byte("inserted bytes")...), old[1000:]...)
	c, _ := NewCDC(16 << 10)
	have := Set{}
	have.Add(c.Chunks(old))
	missing := Total(Missing(c.Chunks(new), have))
	if missing > 3*int64(c.Max) {
		t.Fatalf("an insertion of 14 bytes left %d bytes to download", missing)
	}
	fixedHave := Set{}
	fixedHave.Add(FixedChunks(old, 16<<10))
	if m := Total(Missing(FixedChunks(new, 16<<10), fixedHave)); m < int64(len(new))/2 {
		t.Fatalf("fixed blocks found %d bytes after a shift; the test data is not what it should be", int64(len(new))-m)
	}
	if m := Total(RollingMissing(new, 16<<10, old)); m > 2*16<<10 {
		t.Fatalf("rolling match left %d bytes after a shift", m)
	}
}

func TestMissingCountsRepeatsOnce(t *testing.T) {
	block := randomBytes(4096, 3)
	data := bytes.Repeat(block, 4)
	if got := Total(Missing(FixedChunks(data, 4096), Set{})); got != 4096 {
		t.Fatalf("four equal blocks: %d bytes missing, want 4096", got)
	}
}

func TestCoalesce(t *testing.T) {
	rs := []Range{{Off: 0, Len: 10}, {Off: 10, Len: 5}, {Off: 20, Len: 5}, {Off: 100, Len: 1}}
	if got := Coalesce(rs, 0); len(got) != 3 || got[0] != (Range{Off: 0, Len: 15}) {
		t.Fatalf("gap 0: %v", got)
	}
	if got := Coalesce(rs, 5); len(got) != 2 || got[0] != (Range{Off: 0, Len: 25}) || Total(got) != 26 {
		t.Fatalf("gap 5: %v", got)
	}
}

func TestLinkTime(t *testing.T) {
	l := Link{Bandwidth: 12.5e6, RTT: 40e6}
	full := l.Time(Fetch{Setup: 3, Requests: []int64{100e6}})
	// 8 s of data plus the set-up round trips and slow start.
	if full.Seconds() < 8.1 || full.Seconds() > 8.6 {
		t.Errorf("100 MB at 12.5 MB/s: %v", full)
	}
	many := make([]int64, 100)
	for i := range many {
		many[i] = 64 << 10
	}
	one, eight := l.Time(Fetch{Requests: many, Conns: 1}), l.Time(Fetch{Requests: many, Conns: 8})
	if eight >= one {
		t.Errorf("100 small ranges: 8 connections %v, 1 connection %v", eight, one)
	}
	if one.Seconds() < 100*0.04 {
		t.Errorf("100 sequential requests took %v, less than their round trips", one)
	}
	capped := Link{Bandwidth: 50e6, RTT: 40e6, PerConn: 6.25e6}
	if p1, p8 := capped.Time(Fetch{Requests: []int64{256 << 20}}), capped.Time(Fetch{Requests: split(256<<20, 8), Conns: 8}); p8*4 > p1 {
		t.Errorf("per-connection cap: 8 ranges %v, one %v", p8, p1)
	}
}

func split(n int64, parts int) []int64 {
	out := make([]int64, parts)
	for i := range out {
		out[i] = n / int64(parts)
	}
	out[parts-1] += n % int64(parts)
	return out
}

func BenchmarkCDC(b *testing.B) {
	data := randomBytes(64<<20, 4)
	c, _ := NewCDC(16 << 10)
	b.SetBytes(int64(len(data)))
	b.Run("cut", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		for b.Loop() {
			_ = c.Boundaries(data)
		}
	})
	b.Run("cut+sha256", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		for b.Loop() {
			_ = c.Chunks(data)
		}
	})
}
