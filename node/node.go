package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/sysext/sysext/extension"
	"github.com/sysext/sysext/fsimage"
	"github.com/sysext/sysext/internal/osrelease"
	"github.com/sysext/sysext/oci"
	"github.com/sysext/sysext/store"
	"github.com/sysext/sysext/verify"
)

// Verifier applies the trust policy to one manifest.
type Verifier interface {
	// Verify checks the signatures on r's manifest (or on the index r
	// resolved through, which lists it) found in t and returns the
	// verification the store requires, for the manifest's digest. It
	// may be called before the manifest is read, with r's Entry holding
	// only the index's descriptor of it: only r.Root, r.Index and
	// r.Descriptor are to be used (a signature is on the digest).
	// tr is the extension's own trust (its recorded or declared policy,
	// the --insecure-allow-unsigned opt-out).
	Verify(ctx context.Context, t oci.Target, ref oci.Reference, r *oci.Resolved, tr Trust) (verify.Verified, error)
}

// Refresher makes systemd-sysext merge the extensions directory again.
type Refresher interface {
	Refresh(ctx context.Context) error
}

// Activation describes one switched link, for the hooks.
type Activation struct {
	Name     string
	Install  store.Install  // now active
	Previous *store.Install // active before, nil for a first install
	Image    string         // the stored file, under Root
	Root     string
	Offline  bool // --root or --no-refresh: nothing was refreshed
}

// Checker proves after a refresh that systemd-sysext merged what we
// expect. An error makes the node switch back to the previous version.
type Checker interface {
	Check(ctx context.Context, a Activation) error
}

// Plan is what a pull is about to activate, for the preflight hook.
type Plan struct {
	Name     string
	Ref      oci.Reference
	Entry    *oci.Entry
	Root     string
	Metadata extension.Metadata
	// Format is the image's filesystem: the layer's media type says it
	// before the download ("" when it names none), the file after.
	Format fsimage.Format
	// Compression lists an EROFS image's compressors: the manifest's
	// annotation, else its superblock read ahead with one Range request;
	// after the download, the file's superblock. nil when unknown.
	Compression []string
	// Downloaded says the image is downloaded and checked (not yet
	// committed): Format and Compression are the file's own.
	Downloaded bool
}

// Preflighter refuses before anything is downloaded or touched. A pull
// asks it again once the image is downloaded, before anything is kept or
// activated, when the file says more than the manifest did (an EROFS
// image's compressors the manifest did not name).
type Preflighter interface {
	Preflight(ctx context.Context, p Plan) error
}

// Options configure a Node.
type Options struct {
	Store store.Options
	OCI   oci.Options
	// Verifier is required for anything that installs.
	Verifier Verifier
	// Refresher is used on the running system unless NoRefresh; nil means
	// SystemdRefresher. It is never used with a Root other than "/".
	Refresher Refresher
	NoRefresh bool
	// RefreshWithRoot refreshes (and checks) even with a Root other than
	// "/": the Refresher then knows how to merge that root (tests run
	// systemd-sysext in a private namespace with ROOT/var bound over /var).
	RefreshWithRoot bool
	// AllowDowngrade lets pull, update and sync activate a version older
	// (systemd's version order) than the active one. Without it a tag that
	// moved back, or an old signed build served again, is refused; rollback
	// is the way back.
	AllowDowngrade bool
	// Checker and Preflighter are optional hooks (safe activation).
	Checker     Checker
	Preflighter Preflighter
	// Arch is the node's architecture ("" = the host's).
	Arch extension.Arch
	// Log receives one line per notable step (nil = discard).
	Log io.Writer
	// Warn receives warnings, such as an unsigned image accepted (nil = Log).
	Warn io.Writer
	// Progress is told about download progress (of a delta download: the
	// bytes fetched of those to fetch).
	Progress oci.ProgressFunc
	// Reused is told, before a delta download's progress, how many bytes
	// of the image were found in stored images; nil = not told.
	Reused func(reused int64)
	// NoDelta always downloads whole images: no chunk index is looked for
	// and no stored image read (--no-delta).
	NoDelta bool
	// Hook is called at named steps (tests kill the process there).
	Hook func(point string)
	// Now is the clock (tests); nil = time.Now.
	Now func() time.Time
	// NoRegistriesConf ignores the registry configuration files under the
	// root (oci.RegistriesConfFiles); OCI.Registries, when set, is used
	// instead of them anyway.
	NoRegistriesConf bool
}

// Node runs node operations. Each operation takes the store's lock for its
// whole duration.
type Node struct {
	opts Options
	reg  registries
}

// New returns a Node.
func New(opts Options) *Node {
	if opts.Store.Root == "" {
		opts.Store.Root = "/"
	}
	if opts.Log == nil {
		opts.Log = io.Discard
	}
	if opts.Warn == nil {
		opts.Warn = opts.Log
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Hook != nil && opts.Store.Hook == nil {
		opts.Store.Hook = opts.Hook
	}
	return &Node{opts: opts}
}

func (n *Node) hook(p string) {
	if n.opts.Hook != nil {
		n.opts.Hook(p)
	}
}

func (n *Node) logf(format string, args ...any) {
	fmt.Fprintf(n.opts.Log, format+"\n", args...)
}

func (n *Node) warnf(format string, args ...any) {
	fmt.Fprintf(n.opts.Warn, "warning: "+format+"\n", args...)
}

// offline reports whether activation cannot be refreshed here.
func (n *Node) offline() bool {
	if n.opts.NoRefresh {
		return true
	}
	return !n.opts.Store.RunningSystem() && !n.opts.RefreshWithRoot
}

func (n *Node) open(ctx context.Context) (*store.Store, error) {
	return store.Open(ctx, n.opts.Store)
}

// openExisting opens the store for a command that only changes what is
// installed: on a node without a store it creates nothing.
func (n *Node) openExisting(ctx context.Context) (*store.Store, error) {
	o := n.opts.Store
	o.IfExists = true
	return store.Open(ctx, o)
}

// TrustChecker is implemented by a Verifier that can tell, before any I/O,
// whether a Trust can be used at all (the policy parses, the keys load),
// so that a pull refuses before it writes anything.
type TrustChecker interface {
	CheckTrust(tr Trust) error
}

// precheck refuses what is wrong in a pull request itself: the reference's
// syntax, the name, the trust. Nothing has been written yet.
func (n *Node) precheck(req PullRequest) error {
	if _, err := oci.ParseReference(req.Ref); err != nil {
		return err
	}
	if req.Name != "" {
		if err := extension.ValidateName(req.Name); err != nil {
			return fmt.Errorf("--name: %w", err)
		}
	}
	if n.opts.Verifier == nil {
		return errNoVerifier
	}
	if c, ok := n.opts.Verifier.(TrustChecker); ok {
		return c.CheckTrust(req.trust())
	}
	return nil
}

var errNoVerifier = errors.New("no trust policy configured: give --key, --policy or --insecure-allow-unsigned")

// OSRelease reads the target root's os-release (/etc/os-release, else
// /usr/lib/os-release) and returns it with the path read.
func OSRelease(root string) (*extension.Release, string, error) {
	r, p, err := osrelease.Read(root)
	var nf *osrelease.NotFoundError
	if errors.As(err, &nf) {
		return nil, "", fmt.Errorf("%w: give the root of an OS tree", err)
	}
	return r, p, err
}

func (n *Node) arch() extension.Arch {
	if n.opts.Arch != "" {
		return n.opts.Arch
	}
	return extension.HostArch()
}

// IncompatibleError says a build cannot merge on the target OS; it was
// refused before download.
type IncompatibleError struct {
	Name, Version, Ref, OSRelease string
	Err                           error
}

func (e *IncompatibleError) Error() string {
	return fmt.Sprintf("%s %s (%s) would not merge on this OS (%s): %v; refused before download: pick a build for this OS", e.Name, e.Version, e.Ref, e.OSRelease, e.Err)
}

func (e *IncompatibleError) Unwrap() error { return e.Err }

// compatible applies systemd's rules to the manifest's metadata.
func (n *Node) compatible(meta extension.Metadata, ref string, osr *extension.Release, osrPath string) error {
	if err := extension.Compatible(meta.Release(), extension.Host{OSRelease: osr, Arch: n.arch()}); err != nil {
		return &IncompatibleError{Name: meta.Name, Version: meta.Version, Ref: ref, OSRelease: osrPath, Err: err}
	}
	return nil
}

// DowngradeError says a pull would activate an older version than the
// active one.
type DowngradeError struct {
	Name, Active, Offered, Ref string
}

func (e *DowngradeError) Error() string {
	return fmt.Sprintf("%s: %s offers version %s, older than the active %s: refusing to downgrade (a tag moved back, or an old signed build was served again); use 'sysext rollback %s' to go back, or --allow-downgrade if this is wanted", e.Name, e.Ref, e.Offered, e.Active, e.Name)
}

// checkDowngrade refuses offered when it is older than the active version.
func (n *Node) checkDowngrade(name string, cur *store.Entry, offered, ref string) error {
	if n.opts.AllowDowngrade || cur == nil || cur.Active.Version == "" || offered == "" {
		return nil
	}
	if extension.CompareVersions(offered, cur.Active.Version) < 0 {
		return &DowngradeError{Name: name, Active: cur.Active.Version, Offered: offered, Ref: ref}
	}
	return nil
}
