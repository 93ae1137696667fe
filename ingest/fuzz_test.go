package ingest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding"
	"encoding/json"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"testing"

	"github.com/opencontainers/go-digest"
)

// FuzzRecord: whatever an ingest's record says, Open neither panics nor
// trusts bytes outside the blob, and once the bytes Missing names are
// written, Sum is the blob's digest, or an error. Each input line is a
// record line's JSON, checksummed by the harness so that the fuzzer gets
// past the CRC; a line starting with '#' is written as it is (a torn line).
// The data file holds the true blob, so a record that claims writes can
// only be wrong about the hash state it saved, which Commit's digest check
// catches; without a saved state, Sum must be right.
func FuzzRecord(f *testing.F) {
	b := blob(8 << 10)
	n := int64(len(b))
	want := digest.FromBytes(b)
	state := func(k int) string {
		h := sha256.New()
		h.Write(b[:k])
		s, _ := h.(encoding.BinaryMarshaler).MarshalBinary()
		j, _ := json.Marshal(s)
		return string(j)
	}
	head := fmt.Sprintf(`{"ingest":1,"size":%d,"digest":"%s","boot":"%s"}`, n, want, bootID())
	other := fmt.Sprintf(`{"ingest":1,"size":%d,"digest":"%s","boot":"another boot"}`, n, want)
	for _, lines := range []string{
		head,
		head + "\n" + `{"w":[0,4096]}` + "\n" + `{"h":4096,"state":` + state(4096) + `}` + "\n" + `{"sync":1}`,
		other + "\n" + `{"w":[0,4096]}` + "\n" + `{"sync":1}` + "\n" + `{"w":[4096,1000]}` + "\n" + `{"h":4096,"state":` + state(4096) + `}`,
		head + "\n" + `{"w":[6000,2192]}` + "\n" + `{"w":[0,100]}` + "\n" + `#{"w":[100,5000]} 00000000`,
		head + "\n" + `{"w":[0,8192]}` + "\n" + `{"h":8192,"state":` + state(100) + `}`,
		head + "\n" + `{"w":[-1,5]}`,
		head + "\n" + `{"sync":-3}` + "\n" + `{"h":-1}`,
	} {
		f.Add([]byte(lines))
	}
	// On tmpfs where there is one: Open's fsyncs cost nothing there, so the
	// fuzzer runs thousands of records, not a few.
	tmp := ""
	if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() {
		tmp = "/dev/shm"
	}
	f.Fuzz(func(t *testing.T, lines []byte) {
		dir, err := os.MkdirTemp(tmp, "sysext-fuzz-ingest-")
		if err != nil {
			t.Fatal(err)
		}
		defer os.RemoveAll(dir)
		if err := os.WriteFile(filepath.Join(dir, dataName), b, 0o600); err != nil {
			t.Fatal(err)
		}
		var log bytes.Buffer
		savedState := false
		for _, l := range bytes.Split(lines, []byte("\n")) {
			if raw, torn := bytes.CutPrefix(l, []byte("#")); torn {
				log.Write(raw)
				log.WriteByte('\n')
				continue
			}
			savedState = savedState || bytes.Contains(l, []byte(`"state"`))
			fmt.Fprintf(&log, "%s %08x\n", l, crc32.Checksum(l, castagnoli))
		}
		if err := os.WriteFile(filepath.Join(dir, logName), log.Bytes(), 0o600); err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		w, err := Open(ctx, dir, n, want)
		if err != nil {
			t.Fatalf("open: %v", err)
		}
		defer w.Close()
		if off, written := w.Offset(), w.Written(); off < 0 || off > n || written < off || written > n {
			t.Fatalf("offset %d, written %d of %d", off, written, n)
		}
		end := int64(0)
		for _, r := range w.Missing() {
			if r.Off < end || r.End <= r.Off || r.End > n {
				t.Fatalf("missing %v out of order or outside the blob", w.Missing())
			}
			end = r.End
			if _, err := w.WriteAt(b[r.Off:r.End], r.Off); err != nil {
				t.Fatal(err)
			}
		}
		got, err := w.Sum(ctx)
		if err == nil && got != want && !savedState {
			t.Fatalf("sum %s, want %s, with no saved hash state to blame", got, want)
		}
	})
}
