package main

import (
	"fmt"
	"io"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/sysext/sysext/extension"
	"github.com/sysext/sysext/node"
	"github.com/sysext/sysext/store"
	"github.com/sysext/sysext/verify"
)

// nodeFlags are shared by the node commands (pull, list, update, rollback,
// remove, gc, sync, check).
type nodeFlags struct {
	outputFlags
	registryFlags
	Root          string
	ExtensionsDir string
	PerDeployment bool
	LockTimeout   time.Duration
	NoRefresh     bool
	// trust (pull, update, sync): --key, --policy, keyless flags,
	// --insecure-allow-unsigned
	trustFlags
	// PreflightStrict refuses on preflight warnings (a stacked /usr, an old
	// systemd) too.
	PreflightStrict bool
	// AllowDowngrade (pull, update, sync) accepts a version older than the
	// active one.
	AllowDowngrade bool
	// NoDelta (pull, update, sync) downloads whole images.
	NoDelta bool
}

func (f *nodeFlags) addFlags(c *cobra.Command, refresh, trust bool) {
	f.outputFlags.addFlags(c)
	c.Flags().StringVar(&f.Root, "root", "/", "operate on the OS tree at `DIR` (an image build or a staged deployment); nothing is refreshed")
	c.Flags().StringVar(&f.ExtensionsDir, "extensions-dir", "", "activation links go here, inside --root (default /var/lib/extensions; /etc/extensions per deployment)")
	c.Flags().BoolVar(&f.PerDeployment, "per-deployment", false, "keep links and state in the deployment's /etc (ostree, bootc); detected from /run/ostree-booted")
	c.Flags().DurationVar(&f.LockTimeout, "lock-timeout", store.DefaultLockTimeout, "wait this long for another sysext to finish")
	if refresh {
		c.Flags().BoolVar(&f.NoRefresh, "no-refresh", false, "switch links but do not refresh systemd-sysext")
	}
	if trust {
		f.registryFlags.addFlags(c)
		c.Flags().StringArrayVar(&f.KeyPaths, "key", nil, "require a signature by this cosign public key `FILE` (repeatable)")
		c.Flags().StringVar(&f.PolicyPath, "policy", "", "trust policy `FILE` (default /etc/sysext/policy.json under --root)")
		f.trustFlags.addKeylessFlags(c)
		c.Flags().StringArrayVar(&f.VerityCertPaths, "verity-certificate", nil, "require a disk image whose dm-verity root hash this X.509 certificate `FILE` signed (repeatable; installed for systemd in /etc/verity.d)")
		c.Flags().BoolVar(&f.AllowUnsigned, "insecure-allow-unsigned", false, "accept images without a valid signature (prints a warning)")
		c.Flags().BoolVar(&f.PreflightStrict, "strict", false, "refuse when the preflight warns (/usr already stacked on overlays, an old systemd)")
		c.Flags().BoolVar(&f.AllowDowngrade, "allow-downgrade", false, "accept a version older (in systemd's version order) than the active one; without it a tag that moved back is refused ('sysext rollback' goes back)")
		c.Flags().BoolVar(&f.NoDelta, "no-delta", false, "download whole images: no delta download from the images the store holds (docs/format.md, \"Chunk index\")")
	}
}

func (f nodeFlags) trust() verify.TrustOptions {
	// Absolute paths, because the state records them for later updates.
	o := f.TrustOptions
	o.KeyPaths = make([]string, len(f.KeyPaths))
	for i, k := range f.KeyPaths {
		o.KeyPaths[i] = absPath(k)
	}
	if o.PolicyPath != "" {
		o.PolicyPath = absPath(o.PolicyPath)
	}
	if o.TrustedRootPath != "" {
		o.TrustedRootPath = absPath(o.TrustedRootPath)
	}
	o.VerityCertPaths = make([]string, len(f.VerityCertPaths))
	for i, c := range f.VerityCertPaths {
		o.VerityCertPaths[i] = absPath(c)
	}
	o.Root = f.Root
	return o
}

func absPath(p string) string {
	if a, err := filepath.Abs(p); err == nil {
		return a
	}
	return p
}

func (f nodeFlags) storeOptions(copyMode bool) (store.Options, error) {
	root := f.Root
	if root == "" {
		root = "/"
	}
	abs, err := filepath.Abs(root)
	if err != nil {
		return store.Options{}, usageError("--root: %v", err)
	}
	ext := f.ExtensionsDir
	if ext != "" && !filepath.IsAbs(ext) {
		return store.Options{}, usageError("--extensions-dir %s: give an absolute path as seen inside --root", ext)
	}
	per := f.PerDeployment
	if !per && !copyMode && ext == "" {
		per = store.DefaultPerDeployment(abs)
	}
	if copyMode && ext == "" {
		return store.Options{}, usageError("--copy needs --extensions-dir (e.g. /usr/lib/extensions)")
	}
	return store.Options{Root: abs, ExtensionsDir: ext, PerDeployment: per, Copy: copyMode, LockTimeout: f.LockTimeout}, nil
}

func (f nodeFlags) node(c *cobra.Command, copyMode bool) (*node.Node, error) {
	so, err := f.storeOptions(copyMode)
	if err != nil {
		return nil, err
	}
	var log io.Writer = escapeWriter{c.ErrOrStderr()}
	if f.Quiet || f.JSON {
		log = io.Discard
	}
	p := newProgress(c, f.outputFlags)
	return node.New(node.Options{
		Store:          so,
		OCI:            f.registryFlags.options(),
		Verifier:       node.PolicyVerifier{Trust: f.trust()},
		NoRefresh:      f.NoRefresh,
		AllowDowngrade: f.AllowDowngrade,
		NoDelta:        f.NoDelta,
		// Before anything is downloaded: can this system merge the image?
		Preflighter: &node.ActivatePreflight{Strict: f.PreflightStrict, Log: log},
		Log:         log,
		Warn:        escapeWriter{c.ErrOrStderr()}, // warnings are printed even with -q and --json
		Progress:    p.fileFunc("download"),
		Reused:      p.reusedFunc("download"),
	}), nil
}

// finishResult prints r (when there is one) as JSON with --json, else for
// people when forPeople, and returns err (exitCode maps it).
func (f nodeFlags) finishResult(c *cobra.Command, r *node.Result, err error, forPeople bool) error {
	if r != nil {
		if f.JSON {
			if jerr := printJSON(c.OutOrStdout(), r); jerr != nil {
				return jerr
			}
		} else if forPeople && (err == nil || r.Action != "failed") {
			printResult(c.OutOrStdout(), *r)
		}
	}
	return err
}

// finishResults prints rs as JSON ([] for none) with --json, else for people
// unless -q, and gives the exit codes of update and sync: err's on err, 0
// when some result changes the node (node.Result.Changes), else 3 (nothing
// to do). A failed extension's line is printed here; err names only how
// many failed, so each reason is printed once.
func (f nodeFlags) finishResults(c *cobra.Command, rs []node.Result, err error, nothing string) error {
	if f.JSON {
		if rs == nil {
			rs = []node.Result{}
		}
		if jerr := printJSON(c.OutOrStdout(), rs); jerr != nil {
			return jerr
		}
	} else if !f.Quiet {
		printResults(c.OutOrStdout(), rs)
	}
	if err != nil {
		return failedResults(rs, err, f.JSON || f.Quiet)
	}
	for _, r := range rs {
		if r.Changes() {
			return nil
		}
	}
	if len(rs) == 0 {
		return nothingToDo("%s", nothing)
	}
	return nothingToDo("every extension is up to date")
}

// failedResults is the error of a run whose failures were printed one per
// extension: only the count, so no reason is printed twice (with -q or
// --json the reasons were not printed, and err is given whole). The exit
// code stays err's.
func failedResults(rs []node.Result, err error, printedNothing bool) error {
	if printedNothing {
		return err
	}
	n := 0
	for _, r := range rs {
		if r.Action == "failed" {
			n++
		}
	}
	if n == 0 {
		return err
	}
	return &countedError{n: n, err: err}
}

// countedError stands for failures already printed above it.
type countedError struct {
	n   int
	err error
}

func (e *countedError) Error() string {
	if e.n == 1 {
		return "1 extension failed (see above)"
	}
	return fmt.Sprintf("%d extensions failed (see above)", e.n)
}

func (e *countedError) Unwrap() error { return e.err }

// printResults prints node results for people.
func printResults(w io.Writer, rs []node.Result) {
	for _, r := range rs {
		printResult(w, r)
	}
}

func printResult(w io.Writer, r node.Result) {
	switch r.Action {
	case "failed":
		printf(w, "%s: failed: %s\n", r.Name, r.Error)
		return
	case "unchanged":
		printf(w, "%s %s: up to date\n", r.Name, r.Version)
		return
	case "skipped":
		printf(w, "%s %s: %s\n", r.Name, r.Version, r.Error)
		return
	case "needs-download", "would-remove":
		printf(w, "%s: %s (%s)\n", r.Name, r.Action, r.Source)
		return
	case "would-pull":
		fmt.Fprintf(w, "%s %s: would-pull %s (%s; dry run, checked, nothing changed)\n", r.Name, r.Version, extension.ShortDigest(r.Digest), r.Source)
		return
	case "would-update":
		printf(w, "%s %s: would update to %s (%s; dry run, checked, nothing changed)\n", r.Name, r.From, r.Version, extension.ShortDigest(r.Digest))
		return
	case "removed":
		printf(w, "%s: removed\n", r.Name)
		return
	}
	line := fmt.Sprintf("%s %s: %s", r.Name, r.Version, r.Action)
	if r.From != "" && r.From != r.Version {
		line += " from " + r.From
	}
	if r.Digest != "" {
		line += " (" + extension.ShortDigest(r.Digest) + ")"
	}
	if r.Reused > 0 {
		line += fmt.Sprintf(", %s downloaded, %s reused", humanSize(r.Downloaded), humanSize(r.Reused))
	}
	switch {
	case r.Unsigned:
		line += ", UNSIGNED"
	case r.Signer != "":
		line += ", signed by " + shortSigner(r.Signer) // whole in --json and list --wide
	}
	if r.VeritySigner != "" {
		line += "; verity root hash signed by " + r.VeritySigner
	}
	switch r.Activation {
	case extension.ActivationUnproven:
		line += "; unproven until 'sysext sync' sees it merged (sysext list --help)"
	case extension.ActivationRefreshed, extension.ActivationProven:
		line += "; merged"
	case "":
	default:
		line += "; " + string(r.Activation)
	}
	printLine(w, line)
}
