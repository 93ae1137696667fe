package main

import (
	"fmt"
	"io"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

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
		per = (abs == "/" && store.OstreeBooted("/")) || store.IsDeploymentDir(abs)
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
	var log io.Writer = c.ErrOrStderr()
	if f.Quiet || f.JSON {
		log = io.Discard
	}
	p := newProgress(c, f.outputFlags)
	return node.New(node.Options{
		Store:     so,
		OCI:       f.registryFlags.options(),
		Verifier:  node.PolicyVerifier{Trust: f.trust()},
		NoRefresh: f.NoRefresh,
		// Before anything is downloaded: can this system merge the image?
		Preflighter: node.ActivatePreflight{Strict: f.PreflightStrict, Log: log},
		Log:         log,
		Warn:        c.ErrOrStderr(), // warnings are printed even with -q and --json
		Progress:    p.fileFunc("download"),
	}), nil
}

// finishResult prints r (when there is one) as JSON with --json, else for
// people when forPeople, and returns err with exit 1 (nil stays nil).
func (f nodeFlags) finishResult(c *cobra.Command, r *node.Result, err error, forPeople bool) error {
	if r != nil {
		if f.JSON {
			if jerr := printJSON(c.OutOrStdout(), r); jerr != nil {
				return jerr
			}
		} else if forPeople {
			printResult(c.OutOrStdout(), *r)
		}
	}
	return withExit(exitFailure, err)
}

// finishResults prints rs as JSON ([] for none) with --json, else for people
// unless -q, and gives update's exit codes: 1 on err, 0 when some result
// counts as a change, else 3 (nothing to do).
func (f nodeFlags) finishResults(c *cobra.Command, rs []node.Result, err error, isChange func(node.Result) bool) error {
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
		return withExit(exitFailure, err)
	}
	for _, r := range rs {
		if isChange(r) {
			return nil
		}
	}
	return withExit(exitUpToDate, errUpToDate)
}

// printResults prints node results for people.
func printResults(w io.Writer, rs []node.Result) {
	for _, r := range rs {
		printResult(w, r)
	}
}

func printResult(w io.Writer, r node.Result) {
	switch r.Action {
	case "failed":
		fmt.Fprintf(w, "%s: failed: %s\n", r.Name, r.Error)
		return
	case "unchanged":
		fmt.Fprintf(w, "%s %s: up to date\n", r.Name, r.Version)
		return
	case "skipped":
		fmt.Fprintf(w, "%s %s: %s\n", r.Name, r.Version, r.Error)
		return
	case "needs-download", "would-pull", "would-remove":
		fmt.Fprintf(w, "%s: %s (%s)\n", r.Name, r.Action, r.Source)
		return
	case "would-update":
		fmt.Fprintf(w, "%s %s: the source moved to %s (dry run, nothing changed)\n", r.Name, r.Version, short(r.Digest))
		return
	case "removed":
		fmt.Fprintf(w, "%s: removed\n", r.Name)
		return
	}
	line := fmt.Sprintf("%s %s: %s", r.Name, r.Version, r.Action)
	if r.From != "" && r.From != r.Version {
		line += " from " + r.From
	}
	if r.Digest != "" {
		line += " (" + short(r.Digest) + ")"
	}
	switch {
	case r.Unsigned:
		line += ", UNSIGNED"
	case r.Signer != "":
		line += ", signed by " + r.Signer
	}
	if r.VeritySigner != "" {
		line += "; verity root hash signed by " + r.VeritySigner
	}
	switch r.Activation {
	case store.ActivationUnproven:
		line += "; linked, not refreshed (run 'systemd-sysext refresh' or boot it)"
	case store.ActivationRefreshed, store.ActivationProven:
		line += "; merged"
	case "":
	default:
		line += "; " + r.Activation
	}
	fmt.Fprintln(w, line)
}

func short(d string) string {
	if len(d) > 19 {
		return d[:19]
	}
	return d
}
