package store

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/sysext/sysext/atomicfile"
	"github.com/sysext/sysext/extension"
	"github.com/sysext/sysext/ingest"
	"github.com/sysext/sysext/verify"
)

// Installer is where a pulled image goes, in three calls: Ingest (start or
// resume writing it), Ingest.Commit (verify it and keep it, still
// inactive), Install (make it NAME's extension). Store installs into the
// store and switches the activation link; Copier (baking an OS image)
// writes NAME.raw itself.
type Installer interface {
	Ingest(ctx context.Context, name string, want ocispec.Descriptor) (*Ingest, error)
	Install(v verify.Verified, name string, in Install, meta Meta) error
}

var (
	_ Installer = (*Store)(nil)
	_ Installer = (*Copier)(nil)
)

// ingestPrefix starts the name of an ingest directory in the store's NAME
// directory; it is not a temp name (".#"), so Open keeps it for the next
// run to resume.
const ingestPrefix = ".ingest-"

// MaxIngestAge is how long a partial ingest nobody resumed is kept: Open
// removes older ones. A node's update timer retries well within it, and
// the space is bounded anyway: one partial image per extension name.
const MaxIngestAge = 7 * 24 * time.Hour

// Ingest is one image on its way into the store: written through WriteAt
// and HashAt (it is an oci.Writer), invisible until Commit, resumable after
// a crash. Close after Commit does nothing; Close before it keeps a
// partial download for the next run and removes anything else.
type Ingest struct {
	name   string
	want   ocispec.Descriptor
	dir    string         // the ingest's own directory, under Root
	w      *ingest.Writer // nil when stored
	stored *Install       // the store holds this image already
	path   string         // the stored file, when stored
	keep   bool           // a partial ingest survives Close
	// commit puts the verified, durable file where the installer keeps it
	// and returns the file name Install takes.
	commit func(in *Ingest, file string) (string, error)
	done   bool
}

// Stored returns the record of NAME's stored image with the wanted digest
// when the store holds it already: nothing needs to be written, and Commit
// returns its file.
func (in *Ingest) Stored() (Install, bool) {
	if in.stored == nil {
		return Install{}, false
	}
	return *in.stored, true
}

// WriteAt writes the image's bytes at off.
func (in *Ingest) WriteAt(p []byte, off int64) (int, error) { return in.w.WriteAt(p, off) }

// WriteConcurrency is how many WriteAt calls to keep in flight.
func (in *Ingest) WriteConcurrency() int {
	if in.w == nil {
		return 1
	}
	return in.w.WriteConcurrency()
}

// HashAt hashes the bytes at off (the bytes WriteAt gets, in order).
func (in *Ingest) HashAt(p []byte, off int64) { in.w.HashAt(p, off) }

// Offset is where a resumed ingest goes on: the bytes before it are
// written and hashed.
func (in *Ingest) Offset() int64 {
	if in.w == nil {
		return in.want.Size
	}
	return in.w.Offset()
}

// Missing lists the byte ranges not written yet.
func (in *Ingest) Missing() []ingest.Range {
	if in.w == nil {
		return nil
	}
	return in.w.Missing()
}

// Hashed is where the in-order hash stands.
func (in *Ingest) Hashed() int64 {
	if in.w == nil {
		return in.want.Size
	}
	return in.w.Hashed()
}

// HashTo hashes from the file the bytes written out of order, up to end,
// once the bytes before them are hashed (see ingest.Writer.HashTo).
func (in *Ingest) HashTo(ctx context.Context, end int64) error {
	if in.w == nil {
		return nil
	}
	return in.w.HashTo(ctx, end)
}

// Sum ends the writing and returns the digest of the whole image.
func (in *Ingest) Sum(ctx context.Context) (digest.Digest, error) {
	if in.w == nil {
		return in.want.Digest, nil
	}
	return in.w.Sum(ctx)
}

// Name is the file being written (or the stored file), under Root.
func (in *Ingest) Name() string {
	if in.w == nil {
		return in.path
	}
	return in.w.Name()
}

// Commit checks that the image is complete, has size bytes and digest d
// (hashing only what was not hashed in order), makes it durable and keeps
// it as file (NAME-VERSION-ARCH.raw; the store may add the digest to the
// name, see Store), inactive until Install. It returns the file name
// Install takes. Commit always ends the ingest, even on error.
func (in *Ingest) Commit(ctx context.Context, size int64, d digest.Digest, file string) (string, error) {
	if in.done {
		return "", fmt.Errorf("%s: commit of an ingest that was closed", in.name)
	}
	if in.stored != nil {
		in.done = true
		return in.stored.File, nil
	}
	stored, err := in.commitWriter(ctx, size, d, file)
	in.done = true
	in.w.Close()
	if err != nil {
		os.RemoveAll(in.dir)
		return "", err
	}
	return stored, nil
}

func (in *Ingest) commitWriter(ctx context.Context, size int64, d digest.Digest, file string) (string, error) {
	if size != in.want.Size || d != in.want.Digest {
		return "", fmt.Errorf("%s: commit of %s (%d bytes), but the ingest is for %s (%d bytes)", in.name, d, size, in.want.Digest, in.want.Size)
	}
	got, err := in.w.Sum(ctx)
	if err != nil {
		return "", fmt.Errorf("%s: %w", in.name, err)
	}
	if got != d {
		return "", fmt.Errorf("%s: the bytes written do not match %s (got %s): they were not kept", in.name, d, got)
	}
	if err := in.w.Sync(); err != nil {
		return "", fmt.Errorf("%s: %w", in.name, err)
	}
	return in.commit(in, file)
}

// Close ends an ingest that was not committed: a partial download (some
// bytes, no write error) is kept for the next run to resume; a complete
// one that was not committed (its content was refused) or an empty one is
// removed.
func (in *Ingest) Close() error {
	if in.done {
		return nil
	}
	in.done = true
	if in.w == nil {
		return nil
	}
	written, failed := in.w.Written(), in.w.Failed()
	in.w.Close()
	if in.keep && !failed && written > 0 && written < in.want.Size {
		return nil
	}
	return os.RemoveAll(in.dir)
}

// Ingest starts writing NAME's image want into the store, or resumes the
// ingest a killed run left for the same digest; NAME's ingests of other
// images are superseded and removed. When the store already holds the
// image (a version recorded for NAME), the Ingest says so (Stored) and
// nothing is written.
func (s *Store) Ingest(ctx context.Context, name string, want ocispec.Descriptor) (*Ingest, error) {
	if s.opts.ReadOnly {
		return nil, errors.New("store: Ingest needs a writable store")
	}
	if err := extension.ValidateName(name); err != nil {
		return nil, err
	}
	if err := want.Digest.Validate(); err != nil {
		return nil, fmt.Errorf("%s: digest %q: %w", name, want.Digest, err)
	}
	stored, isStored := s.find(name, want.Digest)
	dir := s.ingestDir(name, want.Digest)
	for _, d := range s.ingestDirs(name) {
		if d != dir || isStored {
			if err := os.RemoveAll(d); err != nil {
				return nil, fmt.Errorf("%s: remove a superseded download: %w", name, err)
			}
		}
	}
	if isStored {
		return &Ingest{name: name, want: want, stored: &stored, path: s.ImagePath(name, stored.File)}, nil
	}
	if err := os.MkdirAll(filepath.Dir(dir), dirMode); err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	w, err := ingest.Open(ctx, dir, want.Size, want.Digest)
	if err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	s.hook("ingest")
	return &Ingest{name: name, want: want, dir: dir, w: w, keep: true, commit: s.commitIngest}, nil
}

// commitIngest links the ingest's file into the store under file, read-only,
// never replacing a stored file. A stored file with the same content is
// reused; one with other content makes the new file's name carry its
// digest. Then the ingest directory goes.
func (s *Store) commitIngest(in *Ingest, file string) (string, error) {
	if err := validFile(file); err != nil || file == "" {
		return "", fmt.Errorf("%s: bad stored file name %q", in.name, file)
	}
	src := in.w.Name()
	if err := os.Chmod(src, storeFileMode); err != nil {
		return "", fmt.Errorf("store: %w", err)
	}
	layer := in.want.Digest
	names := []string{file, strings.TrimSuffix(file, extension.ImageSuffix) + "." + extension.ShortDigest(string(layer)) + extension.ImageSuffix}
	for _, name := range names {
		dst := s.ImagePath(in.name, name)
		if _, err := os.Lstat(dst); err == nil {
			if fileHasDigest(dst, layer) {
				s.hook("reuse")
				return name, s.removeIngest(in.dir)
			}
			continue
		}
		// link(2) refuses to replace: a stored file is never modified.
		if err := os.Link(src, dst); err != nil {
			return "", fmt.Errorf("store %s: %w", dst, err)
		}
		s.hook("committed")
		if err := atomicfile.SyncDir(filepath.Dir(dst)); err != nil {
			return "", err
		}
		return name, s.removeIngest(in.dir)
	}
	return "", fmt.Errorf("store: %s and %s exist with other content", names[0], names[1])
}

// removeIngest removes a committed ingest's directory. The stored file is
// safe: it is another link to the data, and an ingest whose data has a
// second link is never written again (package ingest).
func (s *Store) removeIngest(dir string) error {
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("store: %w", err)
	}
	return nil
}

// ingestDir is where NAME's ingest of digest d lives, under Root.
func (s *Store) ingestDir(name string, d digest.Digest) string {
	return s.path(filepath.Join(s.nameDir(name), ingestPrefix+d.Encoded()))
}

// ingestDirs lists NAME's ingest directories, under Root.
func (s *Store) ingestDirs(name string) []string {
	ents, err := os.ReadDir(s.path(s.nameDir(name)))
	if err != nil {
		return nil
	}
	var out []string
	for _, e := range ents {
		if e.IsDir() && strings.HasPrefix(e.Name(), ingestPrefix) {
			out = append(out, s.path(filepath.Join(s.nameDir(name), e.Name())))
		}
	}
	return out
}

// allIngestDirs lists every ingest directory in the store, under Root.
func (s *Store) allIngestDirs() []string {
	ents, err := os.ReadDir(s.path(s.opts.StoreDir))
	if err != nil {
		return nil
	}
	var out []string
	for _, e := range ents {
		if e.IsDir() && extension.ValidateName(e.Name()) == nil {
			out = append(out, s.ingestDirs(e.Name())...)
		}
	}
	return out
}

// ingestAge is how long ago an ingest was last written.
func ingestAge(dir string, now time.Time) time.Duration {
	t, ok := ingest.LastWrite(dir)
	if !ok {
		fi, err := os.Stat(dir)
		if err != nil {
			return 0
		}
		t = fi.ModTime()
	}
	return now.Sub(t)
}

// find returns the stored file of NAME whose image has the given layer
// digest, if the state records one and it is still on disk.
func (s *Store) find(name string, layer digest.Digest) (Install, bool) {
	e, ok := s.state.Extensions[name]
	if !ok || layer == "" {
		return Install{}, false
	}
	for _, in := range append([]Install{e.Active}, e.Previous...) {
		if in.LayerDigest == layer && in.File != "" {
			if _, err := os.Stat(s.ImagePath(name, in.File)); err == nil {
				return in, true
			}
		}
	}
	return Install{}, false
}
