package store

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/opencontainers/go-digest"

	"github.com/sysext/sysext/atomicfile"
	"github.com/sysext/sysext/delta"
	"github.com/sysext/sysext/extension"
)

// Chunk indexes of stored images (delta downloads, docs/format.md): each
// stored image may have its chunk index next to it, NAME/.FILE.chunks,
// written once (atomically) when it is first needed, or kept from the
// download. A dot name: gc, Scan and systemd never take it for an image.
// It goes with its image (Remove, GC).
const chunkIndexSuffix = ".chunks"

// StoredImage is an image in the store, as a source of chunks for a delta
// download.
type StoredImage struct {
	Name        string
	File        string
	Path        string // under Root
	LayerDigest digest.Digest
	Size        int64
}

// maxDeltaSources bounds the stored images one download reads chunks from.
const maxDeltaSources = 32

// StoredImages lists the images the state records and the disk holds, the
// most likely to share chunks with a new image of NAME first: NAME's
// active and previous versions (newest first), then the other extensions'
// active images, then their previous ones. Each layer digest once; at
// most a few dozen.
func (s *Store) StoredImages(name string) []StoredImage {
	var out []StoredImage
	seen := map[digest.Digest]bool{}
	add := func(n string, in Install) {
		if in.File == "" || in.LayerDigest == "" || seen[in.LayerDigest] || len(out) == maxDeltaSources {
			return
		}
		p := s.ImagePath(n, in.File)
		if fi, err := os.Stat(p); err != nil || !fi.Mode().IsRegular() {
			return
		}
		seen[in.LayerDigest] = true
		out = append(out, StoredImage{Name: n, File: in.File, Path: p, LayerDigest: in.LayerDigest, Size: in.Size})
	}
	if e, ok := s.state.Extensions[name]; ok {
		add(name, e.Active)
		for _, in := range e.Previous {
			add(name, in)
		}
	}
	names := s.state.Names()
	for _, n := range names {
		if n != name {
			add(n, s.state.Extensions[n].Active)
		}
	}
	for _, n := range names {
		if n != name {
			for _, in := range s.state.Extensions[n].Previous {
				add(n, in)
			}
		}
	}
	return out
}

// chunkIndexPath is where the chunk index of NAME's stored FILE is kept.
func (s *Store) chunkIndexPath(name, file string) string {
	return s.path(filepath.Join(s.nameDir(name), "."+file+chunkIndexSuffix))
}

// ReadChunkIndex returns the kept chunk index of NAME's stored FILE, or
// nil when there is none. What it holds is the caller's to check (the
// index names the image digest it was made from).
func (s *Store) ReadChunkIndex(name, file string) ([]byte, error) {
	if err := extension.ValidateName(name); err != nil {
		return nil, err
	}
	if err := validFile(file); err != nil || file == "" {
		return nil, fmt.Errorf("%s: bad stored file name %q", name, file)
	}
	f, err := os.OpenFile(s.chunkIndexPath(name, file), os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("%s: chunk index of %s: %w", name, file, err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, delta.MaxIndexSize+1))
	if err != nil {
		return nil, fmt.Errorf("%s: chunk index of %s: %w", name, file, err)
	}
	if len(b) > delta.MaxIndexSize {
		return nil, fmt.Errorf("%s: chunk index of %s: more than %d bytes", name, file, delta.MaxIndexSize)
	}
	return b, nil
}

// WriteChunkIndex keeps the chunk index b of NAME's stored FILE, replacing
// the one kept (atomically: a crash leaves the old one or the new one).
func (s *Store) WriteChunkIndex(name, file string, b []byte) error {
	if s.opts.ReadOnly {
		return errors.New("store: WriteChunkIndex needs a writable store")
	}
	if err := extension.ValidateName(name); err != nil {
		return err
	}
	if err := validFile(file); err != nil || file == "" {
		return fmt.Errorf("%s: bad stored file name %q", name, file)
	}
	if _, err := os.Stat(s.ImagePath(name, file)); err != nil {
		return fmt.Errorf("%s: chunk index of %s: %w", name, file, err)
	}
	if err := atomicfile.WriteFile(s.chunkIndexPath(name, file), b, 0o444); err != nil {
		return fmt.Errorf("%s: chunk index of %s: %w", name, file, err)
	}
	s.hook("chunk-index")
	return nil
}

// RemoveChunkIndex drops the kept chunk index of NAME's stored FILE (one
// that did not match the image).
func (s *Store) RemoveChunkIndex(name, file string) error {
	if extension.ValidateName(name) != nil || validFile(file) != nil || file == "" {
		return nil
	}
	if err := os.Remove(s.chunkIndexPath(name, file)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}

// removeStaleChunkIndexes removes the chunk indexes in NAME's directory
// whose image is gone.
func (s *Store) removeStaleChunkIndexes(name string) error {
	dir := s.path(s.nameDir(name))
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	for _, e := range ents {
		file, ok := strings.CutSuffix(strings.TrimPrefix(e.Name(), "."), chunkIndexSuffix)
		if !ok || !strings.HasPrefix(e.Name(), ".") || !strings.HasSuffix(file, extension.ImageSuffix) {
			continue
		}
		if _, err := os.Lstat(filepath.Join(dir, file)); errors.Is(err, os.ErrNotExist) {
			if err := os.Remove(filepath.Join(dir, e.Name())); err != nil && !errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("%s: %w", name, err)
			}
		}
	}
	return nil
}
