package store

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sysext/sysext/internal/testenv"
)

// The stored images a delta reads from: NAME's versions first (active,
// then previous, newest first), then the other extensions' active images,
// then their previous ones; each content once.
func TestStoredImagesOrder(t *testing.T) {
	s := open(t, Options{Root: testenv.TempDirNoLeak(t, ".#")})
	put(t, s, "a", "1", "a one")
	put(t, s, "a", "2", "a two")
	put(t, s, "b", "1", "b one")
	put(t, s, "b", "2", "b two")
	put(t, s, "c", "1", "a two") // the same content as a 2
	var got []string
	for _, im := range s.StoredImages("b") {
		got = append(got, im.Name+"-"+strings.Split(im.File, "-")[1])
		if fi, err := os.Stat(im.Path); err != nil || fi.Size() != im.Size {
			t.Fatalf("%s: %v", im.Path, err)
		}
	}
	if strings.Join(got, " ") != "b-2 b-1 a-2 a-1" {
		t.Fatalf("order %v", got)
	}
	if len(s.StoredImages("new")) != 4 {
		t.Fatal("an extension not installed yet sees no stored images")
	}
}

// A kept chunk index is read back as written, replaced atomically, and
// goes with its image: gc and remove leave no index of an image that is
// gone, and the directory goes with the last image.
func TestChunkIndexKept(t *testing.T) {
	root := testenv.TempDirNoLeak(t, ".#")
	s := open(t, Options{Root: root})
	one := put(t, s, "hello", "1", "one")
	two := put(t, s, "hello", "2", "two")
	if b, err := s.ReadChunkIndex("hello", one.File); err != nil || b != nil {
		t.Fatalf("before any was kept: %q %v", b, err)
	}
	for _, in := range []Install{one, two} {
		if err := s.WriteChunkIndex("hello", in.File, []byte("index of "+in.File)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.WriteChunkIndex("hello", one.File, []byte("new index")); err != nil {
		t.Fatal(err)
	}
	if b, err := s.ReadChunkIndex("hello", one.File); err != nil || string(b) != "new index" {
		t.Fatalf("read back %q %v", b, err)
	}
	if err := s.WriteChunkIndex("hello", "hello-9-x86-64.raw", []byte("x")); err == nil {
		t.Fatal("an index of an image the store does not hold")
	}
	for _, bad := range []string{"../x.raw", "x", ""} {
		if err := s.WriteChunkIndex("hello", bad, []byte("x")); err == nil {
			t.Fatalf("file %q accepted", bad)
		}
	}
	dir := s.Path("/var/lib/sysext/store/hello")
	if _, err := s.GC(1); err != nil {
		t.Fatal(err)
	}
	ents, _ := os.ReadDir(dir)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if strings.Join(names, " ") != "."+two.File+".chunks "+two.File {
		t.Fatalf("after gc: %v", names)
	}
	if err := s.RemoveChunkIndex("hello", two.File); err != nil {
		t.Fatal(err)
	}
	if b, _ := s.ReadChunkIndex("hello", two.File); b != nil {
		t.Fatal("removed index still read")
	}
	if err := s.WriteChunkIndex("hello", two.File, []byte("again")); err != nil {
		t.Fatal(err)
	}
	if err := s.Remove("hello"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		ents, _ := os.ReadDir(dir)
		t.Fatalf("the store directory is left after remove: %v", ents)
	}
	if m, _ := filepath.Glob(filepath.Join(root, "var/lib/sysext/store/*/.*.chunks")); len(m) != 0 {
		t.Fatalf("left: %v", m)
	}
}

// Discard removes an ingest's data whatever it holds; the next Ingest of
// the same image starts from nothing.
func TestIngestDiscard(t *testing.T) {
	s := open(t, Options{Root: testenv.TempDirNoLeak(t, ".#")})
	b := image(1<<20, 3)
	in := ingestOf(t, s, "hello", b)
	write(t, in, b, 0, 1<<19)
	if err := in.Discard(); err != nil {
		t.Fatal(err)
	}
	if err := in.Discard(); err != nil {
		t.Fatal("a second Discard failed")
	}
	again, err := s.Ingest(context.Background(), "hello", desc(b))
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	if again.Offset() != 0 || len(again.Missing()) != 1 {
		t.Fatalf("after Discard the ingest resumes at %d", again.Offset())
	}
}
