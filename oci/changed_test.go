package oci_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sysext/sysext/internal/testhook"
	"github.com/sysext/sysext/oci"
	"github.com/sysext/sysext/oci/ocitest"
)

// A file that is written while it is pushed is refused with one line that
// names it and says to push it again; nothing is tagged, no upload session
// or temp file is left, and pushing it again then publishes what it holds
// now. The test hook rewrites the file at a fixed point: after it was
// hashed and before it is sent (on the streaming path the send waits for
// the digest), with other bytes of the same size, more bytes or fewer; or
// after its metadata was read and before it is hashed, with another
// version's image of the same size (a rebuild copied over it, its time
// kept: cp -p).
func TestPushFileChangedWhilePushed(t *testing.T) {
	dist := ocitest.StartDistribution(t)
	targets := []struct {
		name    string
		noChunk bool
		open    func(t *testing.T, tag string) (oci.Target, oci.Reference, func(t *testing.T) []string)
	}{
		// The streaming path: POST, PATCH beside the hashing, PUT ?digest=.
		{"registry", false, registryTarget(dist)},
		// A monolithic PUT once the digest is known.
		{"registry-no-chunk-index", true, registryTarget(dist)},
		// An OCI layout: the upload starts once the digest is known.
		{"layout", false, layoutTarget},
	}
	changes := []struct {
		name   string
		point  string
		change func(t *testing.T, path string)
	}{
		{"same-size", "send", func(t *testing.T, path string) { flipByte(t, path) }},
		{"longer", "send", func(t *testing.T, path string) { resize(t, path, 4096) }},
		{"shorter", "send", func(t *testing.T, path string) { resize(t, path, -1024) }}, // within the 4 KiB padding
		{"rebuilt-before-hashing", "read", nil},                                         // set below: needs the other version
	}
	payload := make([]byte, 1<<20)
	for i := range payload {
		payload[i] = byte(i * 7)
	}
	for i, tg := range targets {
		for j, ch := range changes {
			t.Run(tg.name+"/"+ch.name, func(t *testing.T) {
				file := ocitest.Squashfs(t, ocitest.Meta("changed", "1", "x86-64"), payload)
				change := ch.change
				if change == nil {
					rebuilt := ocitest.Squashfs(t, ocitest.Meta("changed", "2", "x86-64"), payload)
					change = func(t *testing.T, path string) { copyKeepTime(t, rebuilt, path) }
				}
				target, ref, leftovers := tg.open(t, "changed"+string(rune('a'+i*len(changes)+j))+":1")
				hashed := make(chan struct{})
				var once, changed sync.Once
				testhook.PushFile = func(point, path string) {
					if path != file {
						return
					}
					if point == "hashed" {
						once.Do(func() { close(hashed) })
					}
					if point != ch.point {
						return
					}
					if point == "send" {
						// On the streaming path the send runs beside
						// the hashing: it waits here for the digest.
						select {
						case <-hashed:
						case <-time.After(time.Minute):
							t.Error("the file's digest was never known")
						}
					}
					changed.Do(func() { change(t, path) })
				}
				defer func() { testhook.PushFile = nil }()
				_, err := oci.Push(context.Background(), target, ref, []string{file}, oci.PushOptions{NoChunkIndex: tg.noChunk})
				testhook.PushFile = nil
				if err == nil {
					t.Fatal("push of a file that changed while it was pushed succeeded")
				}
				msg := err.Error()
				if strings.Contains(msg, "\n") || !strings.Contains(msg, file) || !strings.Contains(msg, "changed while it was pushed") || !strings.Contains(msg, "push it again") {
					t.Errorf("error %q: want one line naming %s that says it changed while it was pushed and to push it again", msg, file)
				}
				if _, err := oci.Resolve(context.Background(), target, ref, "x86-64"); !errors.Is(err, oci.ErrNotFound) {
					t.Errorf("after the failed push the tag resolves: %v", err)
				}
				if left := leftovers(t); len(left) > 0 {
					t.Errorf("left behind: %v", left)
				}
				// Pushed again, it publishes what the file holds now.
				if _, err := oci.Push(context.Background(), target, ref, []string{file}, oci.PushOptions{NoChunkIndex: tg.noChunk}); err != nil {
					t.Fatalf("push again: %v", err)
				}
				r, err := oci.Resolve(context.Background(), target, ref, "x86-64")
				if err != nil {
					t.Fatal(err)
				}
				if want := fileDigest(t, file); r.Entry.Layer.Digest.String() != want {
					t.Errorf("pushed again: layer %s, want the file's %s", r.Entry.Layer.Digest, want)
				}
			})
		}
	}
}

// registryTarget opens repositories on the distribution registry; what a
// failed push may leave there is an open upload session: its data file
// under _uploads (a session deleted by DELETE keeps, in distribution
// v3, an empty hashstates/sha256/0 there; its purge job removes it).
func registryTarget(reg *ocitest.Registry) func(t *testing.T, tag string) (oci.Target, oci.Reference, func(t *testing.T) []string) {
	return func(t *testing.T, tag string) (oci.Target, oci.Reference, func(t *testing.T) []string) {
		tg, ref := reg.Open(t, "ext/"+tag)
		uploads := filepath.Join(reg.Dir, "docker/registry/v2/repositories/ext", strings.TrimSuffix(tag, ":1"), "_uploads")
		return tg, ref, func(t *testing.T) []string {
			open, err := filepath.Glob(filepath.Join(uploads, "*", "data"))
			if err != nil {
				t.Fatal(err)
			}
			return open
		}
	}
}

// layoutTarget opens a new OCI layout; what a failed push may leave there
// is a temp file (oras-go ingests a blob into one).
func layoutTarget(t *testing.T, tag string) (oci.Target, oci.Reference, func(t *testing.T) []string) {
	tg, ref := ocitest.OpenLayout(t, "1")
	return tg, ref, func(t *testing.T) []string {
		var out []string
		filepath.WalkDir(ref.Layout, func(p string, d os.DirEntry, err error) error {
			if err == nil && !d.IsDir() && !strings.Contains(p, "/blobs/sha256/") && filepath.Base(p) != "oci-layout" && filepath.Base(p) != "index.json" {
				out = append(out, p)
			}
			return nil
		})
		return out
	}
}

// flipByte changes one byte in the middle of the file, in place.
func flipByte(t *testing.T, path string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, _ := f.Stat()
	b := make([]byte, 1)
	off := fi.Size() / 2
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0xff
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

// resize grows (zeros) or shrinks the file by n bytes, in place.
func resize(t *testing.T, path string, n int64) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, fi.Size()+n); err != nil {
		t.Fatal(err)
	}
}

// copyKeepTime writes src's bytes over dst, in place, and gives dst
// src's modification time.
func copyKeepTime(t *testing.T, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(dst)
	if err != nil {
		t.Fatal(err)
	}
	if int64(len(b)) != fi.Size() {
		t.Fatalf("the rebuilt image has %d bytes, the first %d: want the same size", len(b), fi.Size())
	}
	if err := os.WriteFile(dst, b, 0o644); err != nil {
		t.Fatal(err)
	}
	old := fi.ModTime().Add(-time.Hour)
	if err := os.Chtimes(dst, old, old); err != nil {
		t.Fatal(err)
	}
}
