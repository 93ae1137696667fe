package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/sysext/sysext/atomicfile"
	"github.com/sysext/sysext/extension"
	"github.com/sysext/sysext/internal/inroot"
)

// Default paths, as seen on the running system (inside Root).
const (
	DefaultStoreDir        = "/var/lib/sysext/store"
	DefaultStateFile       = "/var/lib/sysext/state.json"
	DefaultLockFile        = "/var/lib/sysext/lock"
	DefaultExtensionsDir   = "/var/lib/extensions"
	PerDeploymentDir       = "/etc/extensions"
	PerDeploymentStateFile = "/etc/sysext/state.json"
	storeFileMode          = 0o444
	copyFileMode           = 0o644
	stateFileMode          = 0o644
	dirMode                = 0o755
)

// SearchDirs are systemd-sysext's extension directories, first name wins.
var SearchDirs = extension.SysextDirs

// Options say where the store lives. Paths other than Root are as seen on
// the running system and are joined to Root.
type Options struct {
	Root          string // "" or "/" for the running system
	ExtensionsDir string // default /var/lib/extensions (/etc/extensions per deployment)
	StoreDir      string // default /var/lib/sysext/store
	StateFile     string // default /var/lib/sysext/state.json (/etc/sysext/state.json per deployment)
	LockFile      string // default /var/lib/sysext/lock
	// PerDeployment keeps links and state in the deployment's /etc (ostree,
	// bootc) and the images in the shared /var store.
	PerDeployment bool
	// VarRoot is where the system's /var lives, when not under Root: an
	// ostree deployment checkout (.../ostree/deploy/OS/deploy/CSUM.N) has an
	// empty var/ and shares OS/var, so VarRoot is .../ostree/deploy/OS
	// (detected). Paths under /var are joined to it.
	VarRoot string
	// Copy selects the other installer, Copier (OpenCopy): NAME.raw itself
	// in ExtensionsDir, no link, no state, no lock file in /var (baking
	// into an OS image). Open refuses it.
	Copy        bool
	LockTimeout time.Duration // default DefaultLockTimeout
	// ReadOnly opens without the lock and without recovery (list by a
	// user who cannot write, or when another process holds the lock).
	ReadOnly bool
	// IfExists opens read-only, creating nothing, when the node has no
	// store yet (neither the lock file nor the state file exists): for
	// commands that only change what is installed (update, rollback,
	// remove, gc), which then have nothing to do and write nothing.
	IfExists bool
	// Hook, when set, is called at every step that changes the disk; tests
	// use it to kill the process at each point.
	Hook func(point string)
}

// RunningSystem reports whether o is the running system's store (Root ""
// or "/"), where systemd-sysext can be asked and refreshed, rather than an
// OS tree under --root.
func (o Options) RunningSystem() bool {
	return o.Root == "" || filepath.Clean(o.Root) == "/"
}

func (o Options) withDefaults() Options {
	if o.Root == "" {
		o.Root = "/"
	}
	if o.ExtensionsDir == "" {
		o.ExtensionsDir = DefaultExtensionsDir
		if o.PerDeployment {
			o.ExtensionsDir = PerDeploymentDir
		}
	}
	if o.StoreDir == "" {
		o.StoreDir = DefaultStoreDir
	}
	if o.StateFile == "" {
		o.StateFile = DefaultStateFile
		if o.PerDeployment {
			o.StateFile = PerDeploymentStateFile
		}
	}
	if o.LockFile == "" {
		o.LockFile = DefaultLockFile
	}
	if o.LockTimeout == 0 {
		o.LockTimeout = DefaultLockTimeout
	}
	if o.VarRoot == "" && IsDeploymentDir(o.Root) {
		o.VarRoot = filepath.Dir(filepath.Dir(filepath.Clean(o.Root)))
	}
	return o
}

// Store is an open node store. Methods other than the read accessors need
// the lock, which Open takes; Close releases it.
type Store struct {
	opts  Options
	lock  *lock
	state *State
}

// Open takes the lock (bounded wait), removes temp files a crashed run
// left, finishes or undoes an interrupted change, and loads the state. A
// corrupt state file gives a *CorruptStateError and no Store.
func Open(ctx context.Context, opts Options) (*Store, error) {
	opts = opts.withDefaults()
	s := &Store{opts: opts}
	for _, p := range []string{opts.ExtensionsDir, opts.StoreDir, opts.StateFile, opts.LockFile} {
		if !filepath.IsAbs(p) {
			return nil, fmt.Errorf("store path %q must be absolute (it is taken inside --root)", p)
		}
	}
	if err := s.checkPaths(opts.ExtensionsDir, opts.StoreDir, opts.StateFile, opts.LockFile); err != nil {
		return nil, err
	}
	if opts.Copy {
		return nil, errors.New("store: copy mode has no store: use OpenCopy")
	}
	if opts.IfExists && !opts.ReadOnly && !s.exists() {
		opts.ReadOnly = true
		s.opts.ReadOnly = true
	}
	if opts.ReadOnly {
		st, err := readState(s.path(opts.StateFile))
		if err != nil {
			return nil, err
		}
		s.state = st
		return s, nil
	}
	if err := os.MkdirAll(filepath.Dir(s.path(opts.LockFile)), dirMode); err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	l, err := acquireLock(ctx, s.path(opts.LockFile), opts.LockTimeout, true)
	if err != nil {
		return nil, err
	}
	s.lock = l
	s.hook("locked")
	if err := s.removeTemps(); err != nil {
		s.Close()
		return nil, err
	}
	st, err := readState(s.path(opts.StateFile))
	if err != nil {
		s.Close()
		return nil, err
	}
	s.state = st
	if err := s.recover(); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// exists reports whether the node has a store: a lock file, a state file
// or a store directory.
func (s *Store) exists() bool {
	for _, p := range []string{s.opts.LockFile, s.opts.StateFile, s.opts.StoreDir} {
		if _, err := os.Lstat(s.path(p)); err == nil {
			return true
		}
	}
	return false
}

// Close releases the lock.
func (s *Store) Close() error {
	if s.lock == nil {
		return nil
	}
	err := s.lock.release()
	s.lock = nil
	return err
}

// Options returns the options the store was opened with, defaults filled.
func (s *Store) Options() Options { return s.opts }

// State returns a copy of the state.
func (s *Store) State() *State { return s.state.clone() }

// Entry returns a copy of NAME's entry.
func (s *Store) Entry(name string) (*Entry, bool) {
	e, ok := s.state.Extensions[name]
	if !ok {
		return nil, false
	}
	return e.clone(), true
}

// ActiveManifest reports whether manifest d is some installed
// extension's active one.
func (s *Store) ActiveManifest(d digest.Digest) bool {
	for _, e := range s.state.Extensions {
		if e.Active.ManifestDigest == d {
			return true
		}
	}
	return false
}

func (s *Store) hook(point string) {
	if s.opts.Hook != nil {
		s.opts.Hook(point)
	}
}

// path maps a path on the running system to the path under Root (or, for
// /var, under VarRoot), every symlink on the way, the last one's too,
// resolved inside that root (inroot.Join): ROOT/var -> /elsewhere means
// ROOT/elsewhere, never the host's.
func (s *Store) path(p string) string { return s.resolve(p, true) }

// linkPath is path for a file that may itself be a symlink we manage (an
// activation link): everything but the last component is resolved.
func (s *Store) linkPath(p string) string { return s.resolve(p, false) }

func (s *Store) resolve(p string, followLast bool) string {
	root := s.opts.Root
	if s.opts.VarRoot != "" && (p == "/var" || strings.HasPrefix(filepath.Clean(p), "/var/")) {
		root = s.opts.VarRoot
	}
	return resolveIn(root, p, followLast)
}

// resolveIn is p as seen inside root, every symlink on the way resolved
// inside it (the last one too when followLast).
func resolveIn(root, p string, followLast bool) string {
	join := inroot.Join
	if !followLast {
		join = inroot.JoinParent
	}
	full, err := join(root, p)
	if err != nil {
		// A symlink loop or an unreadable directory inside the root. Open
		// checked the store's own directories, so this is a crafted entry
		// below them: give a name every system call refuses (EINVAL for
		// the NUL) rather than one the host would resolve.
		return filepath.Join(root, p) + "\x00(" + err.Error() + ")"
	}
	return full
}

// checkPaths fails Open with a clear error when one of the store's
// directories cannot be resolved inside the root.
func (s *Store) checkPaths(paths ...string) error {
	for _, p := range paths {
		root := s.opts.Root
		if s.opts.VarRoot != "" && (p == "/var" || strings.HasPrefix(filepath.Clean(p), "/var/")) {
			root = s.opts.VarRoot
		}
		if _, err := inroot.Join(root, p); err != nil {
			return fmt.Errorf("--root %s: %s: %w", root, p, err)
		}
	}
	return nil
}

// Path maps a path on the running system to the path under Root.
func (s *Store) Path(p string) string { return s.path(p) }

// nameDir is the store directory of NAME, as seen on the running system.
func (s *Store) nameDir(name string) string { return filepath.Join(s.opts.StoreDir, name) }

// ImagePath returns where NAME's stored FILE is, under Root.
func (s *Store) ImagePath(name, file string) string {
	return s.path(filepath.Join(s.nameDir(name), file))
}

// LinkPath returns NAME's activation link (or copied file), under Root.
func (s *Store) LinkPath(name string) string {
	return s.linkPath(filepath.Join(s.opts.ExtensionsDir, name+extension.ImageSuffix))
}

// linkTarget is what NAME's link points to for FILE: an absolute path on
// the running system, so the link works when Root becomes /.
func (s *Store) linkTarget(name, file string) string { return filepath.Join(s.nameDir(name), file) }

func (s *Store) writeState(st *State) error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return fmt.Errorf("state: %w", err)
	}
	p := s.path(s.opts.StateFile)
	if err := os.MkdirAll(filepath.Dir(p), dirMode); err != nil {
		return fmt.Errorf("state: %w", err)
	}
	if err := atomicfile.WriteFile(p, append(b, '\n'), stateFileMode); err != nil {
		return fmt.Errorf("state: %w", err)
	}
	s.state = st
	return nil
}

// removeTemps removes the temp files a crashed run left, and the ingests
// nobody resumed for MaxIngestAge. The other ingests stay: the next pull
// of the same image resumes them.
func (s *Store) removeTemps() error {
	dirs := []string{filepath.Dir(s.path(s.opts.StateFile)), s.path(s.opts.ExtensionsDir), s.path(s.opts.StoreDir)}
	if ents, err := os.ReadDir(s.path(s.opts.StoreDir)); err == nil {
		for _, e := range ents {
			if e.IsDir() && extension.ValidateName(e.Name()) == nil {
				dirs = append(dirs, s.path(s.nameDir(e.Name())))
			}
		}
	}
	now := time.Now()
	for _, d := range s.allIngestDirs() {
		if ingestAge(d, now) > MaxIngestAge {
			if err := os.RemoveAll(d); err != nil {
				return fmt.Errorf("remove a stale download %s: %w", d, err)
			}
			continue
		}
		dirs = append(dirs, d)
	}
	for _, d := range dirs {
		if err := atomicfile.RemoveTemps(d); err != nil {
			return fmt.Errorf("remove temp files in %s: %w", d, err)
		}
	}
	return nil
}

// recover finishes or undoes changes a crash interrupted. The link decides
// whether an activation happened.
func (s *Store) recover() error {
	changed := false
	st := s.state.clone()
	for _, name := range st.Names() {
		e := st.Extensions[name]
		if e.Pending == nil {
			continue
		}
		changed = true
		switch e.Pending.Op {
		case opActivate:
			next := e.Pending.Next
			target, _ := os.Readlink(s.LinkPath(name))
			if next != nil && target == s.linkTarget(name, next.Active.File) {
				st.Extensions[name] = next
			} else if e.Active.File == "" {
				delete(st.Extensions, name)
			} else {
				e.Pending = nil
			}
		case opRemove:
			if err := s.removeFiles(name, e); err != nil {
				return err
			}
			delete(st.Extensions, name)
		default:
			return &CorruptStateError{s.path(s.opts.StateFile), fmt.Errorf("extension %s: unknown pending operation %q", name, e.Pending.Op)}
		}
	}
	if !changed {
		return nil
	}
	s.hook("recover")
	return s.writeState(st)
}

// validFile checks a file name the state records: "" (none) or an image
// file name.
func validFile(file string) error {
	if file == "" {
		return nil
	}
	if err := extension.ValidateImageFile(file); err != nil {
		return fmt.Errorf("stored file name: %w", err)
	}
	return nil
}
