package store

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/sysext/sysext/atomicfile"
	"github.com/sysext/sysext/extension"
	"github.com/sysext/sysext/verify"
)

// ForeignError says an extension of that name exists that sysext did not
// install; it is never touched.
type ForeignError struct {
	Name string
	Path string
	Copy bool // copy mode: a file with other content is there
}

func (e *ForeignError) Error() string {
	if e.Copy {
		return fmt.Sprintf("%s: %s exists with other content and --copy replaces only an identical file: remove it first if it should be replaced", e.Name, e.Path)
	}
	return fmt.Sprintf("%s: %s was not installed by sysext, so it is left untouched: remove it yourself if sysext should manage %s", e.Name, e.Path, e.Name)
}

// NotInstalledError says sysext has no record of NAME.
type NotInstalledError struct{ Name string }

func (e *NotInstalledError) Error() string {
	return fmt.Sprintf("%s is not installed by sysext (see 'sysext list')", e.Name)
}

// Meta is what an install records besides the image itself.
type Meta struct {
	Source        string
	Declared      string
	Trust         Trust
	AllowUnsigned bool
}

// checkForeign returns a *ForeignError when an extension named NAME exists
// in any of systemd-sysext's directories under Root, or in the extensions
// directory extDir, that ours does not accept (ours is only asked about
// extDir/NAME.raw). path maps a path on the running system under Root,
// linkPath the same but for the last component, which may be our link.
func checkForeign(path, linkPath func(string) string, extDir, name string, copyMode bool, ours func(p string, fi os.FileInfo) bool) error {
	if err := extension.ValidateName(name); err != nil {
		return err
	}
	own := path(extDir)
	for _, dir := range SearchDirs {
		isOwn := path(dir) == own
		for _, base := range []string{name + extension.ImageSuffix, name} {
			p := linkPath(filepath.Join(dir, base))
			fi, err := os.Lstat(p)
			if errors.Is(err, os.ErrNotExist) {
				continue
			}
			if err != nil {
				return fmt.Errorf("%s: %w", p, err)
			}
			if isOwn && base == name+extension.ImageSuffix && ours(p, fi) {
				continue
			}
			return &ForeignError{Name: name, Path: p, Copy: copyMode && isOwn}
		}
	}
	// A custom extensions directory is not in SearchDirs.
	p := linkPath(filepath.Join(extDir, name+extension.ImageSuffix))
	if fi, err := os.Lstat(p); err == nil && !ours(p, fi) {
		return &ForeignError{Name: name, Path: p, Copy: copyMode}
	}
	return nil
}

// CheckForeign refuses when an extension named NAME exists that is not our
// link into the store. Install runs it itself; a dry run asks it instead.
func (s *Store) CheckForeign(name string) error {
	return checkForeign(s.path, s.linkPath, s.opts.ExtensionsDir, name, false, func(p string, fi os.FileInfo) bool {
		return s.isOurs(name, p, fi)
	})
}

// isOurs reports whether p is a link into NAME's store directory.
func (s *Store) isOurs(name, p string, fi os.FileInfo) bool {
	if fi.Mode()&os.ModeSymlink == 0 {
		return false
	}
	t, err := os.Readlink(p)
	if err != nil {
		return false
	}
	dir, file := filepath.Split(t)
	return filepath.Clean(dir) == s.nameDir(name) && validFile(file) == nil
}

func fileHasDigest(p string, d digest.Digest) bool {
	if d.Algorithm() != digest.SHA256 {
		return false
	}
	f, err := os.Open(p)
	if err != nil {
		return false
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return false
	}
	return digest.NewDigest(digest.SHA256, h) == d
}

// Install activates a stored file as NAME: the state records it (with the
// previous active version kept for rollback), then the link is switched.
// v must be the verification of in.ManifestDigest.
func (s *Store) Install(v verify.Verified, name string, in Install, meta Meta) error {
	if s.opts.ReadOnly {
		return errors.New("store: Install needs a writable store")
	}
	if err := v.Check(in.ManifestDigest); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	in.Signer, in.Unsigned = v.Signer(), v.Unsigned()
	if err := validFile(in.File); err != nil || in.File == "" {
		return fmt.Errorf("%s: bad stored file name %q", name, in.File)
	}
	if _, err := os.Stat(s.ImagePath(name, in.File)); err != nil {
		return fmt.Errorf("%s: stored image: %w", name, err)
	}
	// The one check for a file a person put there: right before the link
	// switch (Rollback and Remove check too, as they touch the link).
	if err := s.CheckForeign(name); err != nil {
		return err
	}
	if in.InstalledAt.IsZero() {
		in.InstalledAt = time.Now().UTC()
	}
	var next *Entry
	if cur, ok := s.state.Extensions[name]; ok {
		next = cur.clone()
		if cur.Active.File != "" && cur.Active.File != in.File {
			next.Previous = append([]Install{cur.Active}, without(cur.Previous, in.File)...)
		} else {
			next.Previous = without(cur.Previous, in.File)
		}
	} else {
		next = &Entry{Name: name}
	}
	next.Source, next.Declared, next.Trust, next.AllowUnsigned = meta.Source, meta.Declared, meta.Trust, meta.AllowUnsigned
	next.Active = in
	next.Activation = Activation{Status: extension.ActivationPending, At: in.InstalledAt}
	next.Pending = nil
	return s.activate(name, next)
}

func without(list []Install, file string) []Install {
	out := make([]Install, 0, len(list))
	for _, in := range list {
		if in.File != file {
			out = append(out, in)
		}
	}
	return out
}

// activate records the intent, switches the link, records the result.
func (s *Store) activate(name string, next *Entry) error {
	st := s.state.clone()
	cur, ok := st.Extensions[name]
	if !ok {
		cur = &Entry{Name: name}
		st.Extensions[name] = cur
	}
	cur.Pending = &Pending{Op: opActivate, Next: next}
	if err := s.writeState(st); err != nil {
		return err
	}
	s.hook("intent")
	link := s.LinkPath(name)
	if err := os.MkdirAll(filepath.Dir(link), dirMode); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	if err := atomicfile.Symlink(s.linkTarget(name, next.Active.File), link); err != nil {
		return fmt.Errorf("%s: activate: %w", name, err)
	}
	s.hook("linked")
	st = s.state.clone()
	st.Extensions[name] = next
	if err := s.writeState(st); err != nil {
		return err
	}
	s.hook("recorded")
	return nil
}

// Rollback makes NAME's previous stored version active again; the version
// it replaces becomes the previous one. It returns the now active install.
func (s *Store) Rollback(name string) (Install, error) {
	cur, ok := s.state.Extensions[name]
	if !ok {
		return Install{}, &NotInstalledError{name}
	}
	if len(cur.Previous) == 0 {
		return Install{}, fmt.Errorf("%s: no previous version is stored to roll back to (gc may have removed it)", name)
	}
	prev := cur.Previous[0]
	if _, err := os.Stat(s.ImagePath(name, prev.File)); err != nil {
		return Install{}, fmt.Errorf("%s: previous version %s: %w", name, prev.Version, err)
	}
	if err := s.CheckForeign(name); err != nil {
		return Install{}, err
	}
	next := cur.clone()
	next.Active = prev
	next.Previous = append([]Install{cur.Active}, cur.Previous[1:]...)
	next.Activation = Activation{Status: extension.ActivationPending, At: time.Now().UTC()}
	return prev, s.activate(name, next)
}

// SetActivation records what happened after an activation.
func (s *Store) SetActivation(name string, a Activation) error {
	if _, ok := s.state.Extensions[name]; !ok {
		return &NotInstalledError{name}
	}
	if a.At.IsZero() {
		a.At = time.Now().UTC()
	}
	st := s.state.clone()
	st.Extensions[name].Activation = a
	return s.writeState(st)
}

// Remove deactivates NAME and deletes its stored images and its record.
func (s *Store) Remove(name string) error {
	cur, ok := s.state.Extensions[name]
	if !ok {
		return &NotInstalledError{name}
	}
	if err := s.CheckForeign(name); err != nil {
		return err
	}
	st := s.state.clone()
	st.Extensions[name].Pending = &Pending{Op: opRemove}
	if err := s.writeState(st); err != nil {
		return err
	}
	s.hook("intent")
	if err := s.removeFiles(name, cur); err != nil {
		return err
	}
	st = s.state.clone()
	delete(st.Extensions, name)
	if err := s.writeState(st); err != nil {
		return err
	}
	s.hook("recorded")
	return nil
}

// removeFiles removes NAME's link (only ours) and the files of e that no
// other deployment uses.
func (s *Store) removeFiles(name string, e *Entry) error {
	link := s.LinkPath(name)
	if fi, err := os.Lstat(link); err == nil {
		if !s.isOurs(name, link, fi) {
			return &ForeignError{Name: name, Path: link}
		}
		if err := os.Remove(link); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		s.hook("unlinked")
		if err := atomicfile.SyncDir(filepath.Dir(link)); err != nil {
			return err
		}
	}
	used := s.usedElsewhere()
	for _, in := range append([]Install{e.Active}, e.Previous...) {
		if in.File == "" || used[s.linkTarget(name, in.File)] || used[unknownUse] {
			continue
		}
		if err := os.Remove(s.ImagePath(name, in.File)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("%s: %w", name, err)
		}
		s.hook("deleted")
	}
	for _, d := range s.ingestDirs(name) {
		if err := os.RemoveAll(d); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
	}
	if err := s.removeStaleChunkIndexes(name); err != nil {
		return err
	}
	// Only an empty directory goes; temp files went at Open.
	if err := os.Remove(s.path(s.nameDir(name))); err == nil {
		_ = atomicfile.SyncDir(s.path(s.opts.StoreDir))
	}
	return nil
}

// GC removes stored versions beyond keep per extension (the active one is
// always kept and counts as one), store files no record uses and partial
// downloads. It returns the removed files, under Root.
func (s *Store) GC(keep int) ([]string, error) {
	if keep < 1 {
		return nil, fmt.Errorf("gc: --keep %d: keep at least 1 (the active version is never removed)", keep)
	}
	st := s.state.clone()
	changed := false
	for _, e := range st.Extensions {
		if len(e.Previous) > keep-1 {
			e.Previous = e.Previous[:keep-1]
			changed = true
		}
	}
	if changed {
		if err := s.writeState(st); err != nil {
			return nil, err
		}
		s.hook("gc-recorded")
	}
	used := s.usedElsewhere()
	for name, e := range s.state.Extensions {
		for _, in := range append([]Install{e.Active}, e.Previous...) {
			used[s.linkTarget(name, in.File)] = true
		}
		if e.Pending != nil && e.Pending.Next != nil {
			used[s.linkTarget(name, e.Pending.Next.Active.File)] = true
		}
	}
	var removed []string
	// Partial downloads: gc holds the lock, so none of them is in progress,
	// and gc is what frees space.
	for _, d := range s.allIngestDirs() {
		if err := os.RemoveAll(d); err != nil {
			return removed, fmt.Errorf("gc: %w", err)
		}
		s.hook("gc-deleted")
		removed = append(removed, d)
	}
	root := s.path(s.opts.StoreDir)
	dirs, err := os.ReadDir(root)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("gc: %w", err)
	}
	for _, d := range dirs {
		if !d.IsDir() || extension.ValidateName(d.Name()) != nil {
			continue
		}
		files, err := os.ReadDir(filepath.Join(root, d.Name()))
		if err != nil {
			return removed, fmt.Errorf("gc: %w", err)
		}
		for _, f := range files {
			if !f.Type().IsRegular() || !strings.HasSuffix(f.Name(), extension.ImageSuffix) || strings.HasPrefix(f.Name(), ".") || used[s.linkTarget(d.Name(), f.Name())] || used[unknownUse] {
				continue
			}
			p := filepath.Join(root, d.Name(), f.Name())
			if err := os.Remove(p); err != nil {
				return removed, fmt.Errorf("gc: %w", err)
			}
			s.hook("gc-deleted")
			removed = append(removed, p)
		}
		if err := s.removeStaleChunkIndexes(d.Name()); err != nil {
			return removed, fmt.Errorf("gc: %w", err)
		}
		// Only an empty directory goes (a chunk index went with its image).
		_ = os.Remove(filepath.Join(root, d.Name()))
	}
	if len(removed) > 0 {
		_ = atomicfile.SyncDir(root)
	}
	return removed, nil
}

// LinkTargetIs reports whether NAME's link points at the stored FILE.
func (s *Store) LinkTargetIs(name, file string) bool {
	t, err := os.Readlink(s.LinkPath(name))
	return err == nil && file != "" && t == s.linkTarget(name, file)
}

// Touch records that NAME's source (now source) resolved to resolved while
// the active image stayed the same, so the next update costs one request.
func (s *Store) Touch(name, source string, resolved digest.Digest) error {
	if _, ok := s.state.Extensions[name]; !ok {
		return &NotInstalledError{name}
	}
	st := s.state.clone()
	e := st.Extensions[name]
	e.Source = source
	e.Active.ResolvedDigest = resolved
	return s.writeState(st)
}

// Deactivate removes NAME's activation link (only ours) and keeps its
// record and stored images: the way back when a first install does not
// merge. The caller records why with SetActivation.
func (s *Store) Deactivate(name string) error {
	if _, ok := s.state.Extensions[name]; !ok {
		return &NotInstalledError{name}
	}
	link := s.LinkPath(name)
	fi, err := os.Lstat(link)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	if !s.isOurs(name, link, fi) {
		return &ForeignError{Name: name, Path: link}
	}
	if err := os.Remove(link); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	s.hook("deactivated")
	return atomicfile.SyncDir(filepath.Dir(link))
}

// SetDeclared records which declaration manages NAME ("" = none) and the
// trust it declares, which updates use from then on.
func (s *Store) SetDeclared(name string, m Meta) error {
	if _, ok := s.state.Extensions[name]; !ok {
		return &NotInstalledError{name}
	}
	st := s.state.clone()
	e := st.Extensions[name]
	e.Declared, e.Trust, e.AllowUnsigned = m.Declared, m.Trust, m.AllowUnsigned
	return s.writeState(st)
}
