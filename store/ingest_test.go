package store

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/sysext/sysext/extension"
	"github.com/sysext/sysext/internal/testenv"
	"github.com/sysext/sysext/verify"
	"github.com/sysext/sysext/verify/verifytest"
)

func image(n int, seed byte) []byte {
	b := make([]byte, n)
	rand.NewChaCha8([32]byte{seed}).Read(b)
	return b
}

func desc(b []byte) ocispec.Descriptor {
	return ocispec.Descriptor{Digest: digest.FromBytes(b), Size: int64(len(b))}
}

// write feeds b[from:to] to the ingest in 1 MiB pieces, as a download does.
func write(t *testing.T, in *Ingest, b []byte, from, to int) {
	t.Helper()
	for off := from; off < to; off += 1 << 20 {
		end := min(off+1<<20, to)
		if _, err := in.WriteAt(b[off:end], int64(off)); err != nil {
			t.Fatal(err)
		}
		in.HashAt(b[off:end], int64(off))
	}
}

func ingestOf(t *testing.T, s *Store, name string, b []byte) *Ingest {
	t.Helper()
	in, err := s.Ingest(context.Background(), name, desc(b))
	if err != nil {
		t.Fatal(err)
	}
	return in
}

// storedFiles lists the image files in NAME's store directory.
func storedFiles(s *Store, name string) []string {
	ents, _ := os.ReadDir(s.path(s.nameDir(name)))
	var out []string
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), extension.ImageSuffix) {
			out = append(out, e.Name())
		}
	}
	return out
}

// An ingest is invisible until Commit; a partial one survives Close and
// the next Open, and the next Ingest of the same image resumes it.
func TestIngestResumesAcrossOpen(t *testing.T) {
	root := testenv.TempDirNoLeak(t, ".#")
	o := Options{Root: root}
	b := image(3<<20+17, 1)
	s := open(t, o)
	in := ingestOf(t, s, "x", b)
	write(t, in, b, 0, 2<<20)
	if err := in.Close(); err != nil {
		t.Fatal(err)
	}
	if f := storedFiles(s, "x"); len(f) != 0 || len(s.State().Extensions) != 0 {
		t.Fatalf("a partial ingest is visible: files %v, state %v", f, s.State().Extensions)
	}
	s.Close()

	s = open(t, o)
	in = ingestOf(t, s, "x", b)
	defer in.Close()
	if in.Offset() != 2<<20 {
		t.Fatalf("resumed at %d, want %d", in.Offset(), 2<<20)
	}
	write(t, in, b, 2<<20, len(b))
	file, err := in.Commit(context.Background(), int64(len(b)), digest.FromBytes(b), "x-1-x86-64.raw")
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(s.ImagePath("x", file))
	if err != nil || string(got) != string(b) {
		t.Fatalf("stored file differs (%v)", err)
	}
	if d := s.ingestDirs("x"); len(d) != 0 {
		t.Fatalf("ingest left after commit: %v", d)
	}
}

// Commit checks the digest over the whole file: a byte changed on the way
// (here in the part HashAt did not see) is refused and nothing is kept.
func TestIngestCommitRefusesWrongBytes(t *testing.T) {
	root := testenv.TempDirNoLeak(t, ".#")
	s := open(t, Options{Root: root})
	b := image(2<<20, 2)
	in := ingestOf(t, s, "x", b)
	bad := append([]byte(nil), b...)
	bad[len(bad)-1] ^= 1
	in.WriteAt(bad, 0) // not hashed on the way: Commit reads it back
	_, err := in.Commit(context.Background(), int64(len(b)), digest.FromBytes(b), "x-1-x86-64.raw")
	if err == nil || !strings.Contains(err.Error(), "do not match") {
		t.Fatalf("commit of wrong bytes: %v", err)
	}
	if f := storedFiles(s, "x"); len(f) != 0 || len(s.ingestDirs("x")) != 0 {
		t.Fatalf("left after a refused commit: %v %v", f, s.ingestDirs("x"))
	}
	// An incomplete ingest does not commit either.
	in = ingestOf(t, s, "x", b)
	write(t, in, b, 0, 1<<20)
	if _, err := in.Commit(context.Background(), int64(len(b)), digest.FromBytes(b), "x-1-x86-64.raw"); err == nil || !strings.Contains(err.Error(), "not completely written") {
		t.Fatalf("commit of half an image: %v", err)
	}
}

// What Close keeps: a partial download, for the next run. What it removes:
// an empty one, a complete one nobody committed (its content was refused).
func TestIngestCloseKeepsOnlyPartial(t *testing.T) {
	root := testenv.TempDirNoLeak(t, ".#")
	s := open(t, Options{Root: root})
	b := image(2<<20, 3)
	for _, c := range []struct {
		what string
		to   int
		kept bool
	}{{"empty", 0, false}, {"partial", 1 << 20, true}, {"complete", len(b), false}} {
		in := ingestOf(t, s, "x", b)
		write(t, in, b, 0, c.to)
		in.Close()
		if kept := len(s.ingestDirs("x")) == 1; kept != c.kept {
			t.Errorf("%s ingest: kept %v, want %v", c.what, kept, c.kept)
		}
		for _, d := range s.ingestDirs("x") {
			os.RemoveAll(d)
		}
	}
}

// Stale ingests are bounded: another digest of the same extension
// supersedes one at once, Open removes one not written for MaxIngestAge,
// gc removes them all, and remove removes the extension's.
func TestIngestStaleRemoved(t *testing.T) {
	root := testenv.TempDirNoLeak(t, ".#")
	o := Options{Root: root}
	s := open(t, o)
	v1, v2 := image(2<<20, 4), image(2<<20, 5)
	partial := func(name string, b []byte) {
		in := ingestOf(t, s, name, b)
		write(t, in, b, 0, 1<<20)
		in.Close()
	}
	partial("x", v1)
	partial("x", v2)
	if d := s.ingestDirs("x"); len(d) != 1 || !strings.HasSuffix(d[0], digest.FromBytes(v2).Encoded()) {
		t.Fatalf("after a newer version's ingest: %v", d)
	}
	// Not written for longer than MaxIngestAge: the next Open removes it.
	old := time.Now().Add(-MaxIngestAge - time.Hour)
	d := s.ingestDirs("x")[0]
	must(t, os.Chtimes(filepath.Join(d, "log"), old, old))
	partial("y", v1)
	s.Close()
	s = open(t, o)
	if len(s.ingestDirs("x")) != 0 || len(s.ingestDirs("y")) != 1 {
		t.Fatalf("after Open: x %v, y %v", s.ingestDirs("x"), s.ingestDirs("y"))
	}
	// gc removes every partial download and says so.
	removed, err := s.GC(1)
	if err != nil || len(removed) != 1 || len(s.ingestDirs("y")) != 0 {
		t.Fatalf("gc: %v %v", removed, err)
	}
	// remove takes the extension's partial download with it.
	put(t, s, "z", "1", "one")
	partial("z", v1)
	must(t, s.Remove("z"))
	if _, err := os.Stat(s.path(s.nameDir("z"))); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("remove left the store directory (and its partial download)")
	}
}

// A stored image needs no ingest: Stored says so, Commit returns its file.
func TestIngestOfStoredImage(t *testing.T) {
	root := testenv.TempDirNoLeak(t, ".#")
	s := open(t, Options{Root: root})
	a := put(t, s, "x", "1", "one")
	in, err := s.Ingest(context.Background(), "x", ocispec.Descriptor{Digest: digest.FromString("one"), Size: 3})
	if err != nil {
		t.Fatal(err)
	}
	if st, ok := in.Stored(); !ok || st.File != a.File || in.Name() != s.ImagePath("x", a.File) {
		t.Fatalf("stored %+v %v", st, ok)
	}
	if f, err := in.Commit(context.Background(), 3, digest.FromString("one"), "ignored.raw"); err != nil || f != a.File {
		t.Fatal(f, err)
	}
	if len(s.ingestDirs("x")) != 0 {
		t.Fatal("an ingest was made for a stored image")
	}
}

// TestCrashDuringIngest stops a pull's store steps (ingest, write, commit,
// install) at every hook point and checks that the store is consistent
// and that the next run finishes, resuming what was written.
func TestCrashDuringIngest(t *testing.T) {
	b := image(3<<20, 6)
	d := digest.FromBytes(b)
	points := 0
	for n := 1; ; n++ {
		root := testenv.TempDirNoLeak(t, ".#")
		o := Options{Root: root}
		s := open(t, o)
		put(t, s, "x", "1", "one")
		s.Close()
		pull := func(s *Store) {
			in, err := s.Ingest(context.Background(), "x", desc(b))
			if err != nil {
				t.Fatal(err)
			}
			for off := in.Offset(); off < int64(len(b)); off += 1 << 20 {
				end := min(off+1<<20, int64(len(b)))
				in.WriteAt(b[off:end], off)
				in.HashAt(b[off:end], off)
				s.hook("chunk")
			}
			file, err := in.Commit(context.Background(), int64(len(b)), d, "x-2-x86-64.raw")
			if err != nil {
				t.Fatal(err)
			}
			m := digest.FromString("m2")
			if err := s.Install(acceptUnsigned(m), "x", Install{Version: "2", File: file, LayerDigest: d, ManifestDigest: m, Size: int64(len(b))}, Meta{}); err != nil {
				t.Fatal(err)
			}
		}
		if !crash(t, o, n, pull) {
			break
		}
		points++
		what := fmt.Sprintf("ingest@%d", n)
		s2 := open(t, o)
		checkConsistent(t, s2, what)
		pull(s2)
		checkConsistent(t, s2, what+", rerun")
		if e, _ := s2.Entry("x"); e.Active.Version != "2" {
			t.Fatalf("%s: after the rerun %s is active", what, e.Active.Version)
		}
		if len(s2.ingestDirs("x")) != 0 {
			t.Fatalf("%s: ingest left after the rerun", what)
		}
		s2.Close()
	}
	t.Logf("%d crash points", points)
	if points < 6 {
		t.Fatalf("only %d crash points", points)
	}
}

func acceptUnsigned(d digest.Digest) verify.Verified { return verifytest.AcceptUnsigned(d) }

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
