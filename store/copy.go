package store

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/sysext/sysext/atomicfile"
	"github.com/sysext/sysext/extension"
	"github.com/sysext/sysext/ingest"
	"github.com/sysext/sysext/verify"
)

// Copier is the installer for baking an OS image (--copy): Install writes
// NAME.raw itself into the extensions directory. It keeps no state, locks
// the extensions directory (not /var) and writes nothing under /var. Its
// ingests live in temp directories next to NAME.raw and are not resumable:
// a baking run that dies is run again. An existing NAME.raw is replaced
// only by identical content (then nothing changes).
type Copier struct {
	opts      Options
	lock      *lock
	committed map[string]*Ingest // by name, until Install
}

// OpenCopy takes the lock on the extensions directory (made when missing)
// and removes temp files a crashed run left there. Options.Copy need not
// be set; Root, ExtensionsDir, LockTimeout and Hook are used.
func OpenCopy(ctx context.Context, opts Options) (*Copier, error) {
	opts.Copy = true
	opts = opts.withDefaults()
	if !filepath.IsAbs(opts.ExtensionsDir) {
		return nil, fmt.Errorf("store path %q must be absolute (it is taken inside --root)", opts.ExtensionsDir)
	}
	if opts.ReadOnly {
		return nil, errors.New("copy mode keeps no state to read")
	}
	c := &Copier{opts: opts, committed: map[string]*Ingest{}}
	dir := c.path(opts.ExtensionsDir)
	if err := os.MkdirAll(dir, dirMode); err != nil {
		return nil, fmt.Errorf("extensions directory: %w", err)
	}
	l, err := acquireLock(ctx, dir, opts.LockTimeout, false)
	if err != nil {
		return nil, err
	}
	c.lock = l
	if err := atomicfile.RemoveTemps(dir); err != nil {
		c.Close()
		return nil, fmt.Errorf("remove temp files: %w", err)
	}
	return c, nil
}

// Close removes ingests that were not installed and releases the lock.
func (c *Copier) Close() error {
	for name, in := range c.committed {
		os.RemoveAll(in.dir)
		delete(c.committed, name)
	}
	if c.lock == nil {
		return nil
	}
	err := c.lock.release()
	c.lock = nil
	return err
}

// path and linkPath resolve p inside Root, as the Store's do: an image
// being baked cannot make the copy write outside it.
func (c *Copier) path(p string) string     { return resolveIn(c.opts.Root, p, true) }
func (c *Copier) linkPath(p string) string { return resolveIn(c.opts.Root, p, false) }

func (c *Copier) hook(point string) {
	if c.opts.Hook != nil {
		c.opts.Hook(point)
	}
}

// LinkPath returns NAME.raw in the extensions directory, under Root.
func (c *Copier) LinkPath(name string) string {
	return c.linkPath(filepath.Join(c.opts.ExtensionsDir, name+extension.ImageSuffix))
}

// Ingest starts writing NAME's image into a temp directory in the
// extensions directory.
func (c *Copier) Ingest(ctx context.Context, name string, want ocispec.Descriptor) (*Ingest, error) {
	if err := extension.ValidateName(name); err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp(c.path(c.opts.ExtensionsDir), atomicfile.TempPrefix+"ingest-"+name+"-")
	if err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	w, err := ingest.Open(ctx, dir, want.Size, want.Digest)
	if err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	c.hook("staged")
	return &Ingest{name: name, want: want, dir: dir, w: w, commit: c.commitIngest}, nil
}

// commitIngest keeps the verified file in its directory until Install.
func (c *Copier) commitIngest(in *Ingest, _ string) (string, error) {
	if err := os.Chmod(in.w.Name(), copyFileMode); err != nil {
		return "", fmt.Errorf("%s: %w", in.name, err)
	}
	if old := c.committed[in.name]; old != nil {
		os.RemoveAll(old.dir)
	}
	c.committed[in.name] = in
	return in.name + extension.ImageSuffix, nil
}

// Install moves NAME's committed image to NAME.raw. v must be the
// verification of in.ManifestDigest; in.LayerDigest is the image's digest.
func (c *Copier) Install(v verify.Verified, name string, in Install, _ Meta) error {
	if err := v.Check(in.ManifestDigest); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	staged := c.committed[name]
	if staged == nil || staged.want.Digest != in.LayerDigest {
		return fmt.Errorf("%s: install of an image that was not committed", name)
	}
	delete(c.committed, name)
	defer os.RemoveAll(staged.dir)
	if err := c.checkForeign(name, in.LayerDigest); err != nil {
		return err
	}
	dst := c.LinkPath(name)
	if _, err := os.Lstat(dst); err == nil {
		return nil // identical content, checked by checkForeign
	}
	if err := os.Link(staged.w.Name(), dst); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	c.hook("copied")
	return atomicfile.SyncDir(filepath.Dir(dst))
}

// checkForeign refuses when an extension named NAME exists in any of
// systemd-sysext's directories that is not a file with the layer digest in
// ours.
func (c *Copier) checkForeign(name string, layer digest.Digest) error {
	return checkForeign(c.path, c.linkPath, c.opts.ExtensionsDir, name, true, func(p string, fi os.FileInfo) bool {
		return fi.Mode().IsRegular() && layer != "" && fileHasDigest(p, layer)
	})
}
