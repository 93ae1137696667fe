package delta

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

var updateSeeds = flag.Bool("update-seeds", false, "rewrite the fuzz seeds in testdata/fuzz/FuzzParse")

// FuzzParse: Parse ends on any bytes with an index or ErrInvalid, never a
// panic; an index it accepts encodes back to the same bytes, and its
// chunks tile the image. Seeds: testdata/fuzz/FuzzParse (TestFuzzSeeds
// writes them with -update-seeds).
func FuzzParse(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		ix, err := Parse(data)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error without ErrInvalid: %v", err)
			}
			return
		}
		b, err := ix.MarshalBinary()
		if err != nil || !bytes.Equal(b, data) {
			t.Fatalf("accepted bytes do not encode back: %v", err)
		}
		var off int64
		for _, c := range ix.Chunks {
			if c.Off != off || c.Len < 1 || c.Len > int64(ix.Chunker.Max) {
				t.Fatalf("chunk %+v at %d", c, off)
			}
			off += c.Len
		}
		if off != ix.Size {
			t.Fatalf("chunks cover %d of %d", off, ix.Size)
		}
	})
}

// fuzzSeeds are small valid indexes: of an empty image, of one short
// chunk, of a few chunks.
func fuzzSeeds(t *testing.T) map[string][]byte {
	out := map[string][]byte{}
	for name, n := range map[string]int{"empty": 0, "one-chunk": 1000, "five-chunks": 300 << 10} {
		b, err := build(t, randomBytes(n, 9)).MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		out[name] = b
	}
	return out
}

// TestFuzzSeeds checks that the seed corpus is what fuzzSeeds makes (so a
// format change cannot leave stale seeds) and rewrites it with
// -update-seeds.
func TestFuzzSeeds(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzParse")
	for name, b := range fuzzSeeds(t) {
		p := filepath.Join(dir, name)
		want := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", b)
		if *updateSeeds {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, []byte(want), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		got, err := os.ReadFile(p)
		if err != nil || string(got) != want {
			t.Errorf("seed %s is stale or missing (%v): run go test ./delta -run TestFuzzSeeds -update-seeds", p, err)
		}
	}
}
