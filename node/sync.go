package node

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/sysext/sysext/extension"
	"github.com/sysext/sysext/oci"
	"github.com/sysext/sysext/store"
)

// SyncOptions tune sync.
type SyncOptions struct {
	// Offline does no network I/O: it removes what is no longer declared
	// and reports what would need a download.
	Offline bool
	DryRun  bool
	// Names limits the sync to these extensions (declared, or installed
	// from a declaration that is gone); empty means all. A name that is
	// neither is ErrNotDeclared.
	Names []string
}

// ErrNotDeclared is a name given to sync that no extensions.d file
// declares and no installed extension was declared as.
var ErrNotDeclared = errors.New("not declared")

// Sync makes the installed set equal to the declared set: pulls what is
// missing, updates what moved, removes what is no longer declared. Only
// extensions installed from a declaration are removed; ones pulled by hand
// are kept, and files sysext did not install are never touched.
func (n *Node) Sync(ctx context.Context, so SyncOptions) ([]Result, error) {
	// The declarations and the OS are read first: a declaration that does
	// not parse stops sync before it writes anything.
	root := n.opts.Store.Root
	decl, err := ReadDeclared(root)
	if err != nil {
		return nil, err
	}
	names := so.Names
	if len(names) > 0 {
		decl = keepDeclared(decl, names)
	}
	osr, _, err := OSRelease(root)
	if err != nil {
		return nil, err
	}
	bad := n.precheckDeclared(decl, osr)
	open := n.open
	if len(bad) == len(decl) || so.DryRun {
		open = n.openExisting // only removals (or nothing) to do
	}
	s, err := open(ctx)
	if err != nil {
		return nil, err
	}
	defer s.Close()
	if err := checkNames(s, decl, names); err != nil {
		return nil, err
	}
	n.resume(ctx, s, true)
	var results []Result
	var errs []error
	fail := func(name string, err error) {
		errs = append(errs, err)
		results = append(results, Result{Name: name, Action: "failed", Error: err.Error()})
	}
	declared := map[string]bool{}
	for _, d := range decl {
		declared[d.Name] = true
		r, err := n.syncOne(ctx, s, d, osr, bad[d.Name], so)
		if err != nil {
			fail(d.Name, err)
			continue
		}
		results = append(results, *r)
	}
	for _, name := range s.State().Names() {
		e, _ := s.Entry(name)
		if declared[name] || e.Declared == "" || len(so.Names) > 0 && !slices.Contains(so.Names, name) {
			continue
		}
		if so.DryRun {
			results = append(results, Result{Name: name, Action: "would-remove"})
			continue
		}
		r, err := n.remove(ctx, s, name)
		if err != nil {
			fail(name, err)
			continue
		}
		results = append(results, *r)
	}
	return results, errors.Join(errs...)
}

// syncOne brings one declared extension to its declaration: pulls it,
// updates it from its source, or says what an offline run would need.
// precheck is what precheckDeclared found wrong with the declaration.
func (n *Node) syncOne(ctx context.Context, s *store.Store, d Declared, osr *extension.Release, precheck error, so SyncOptions) (*Result, error) {
	cur, installed := s.Entry(d.Name)
	// A source that is not a reference fails; a trust that does not
	// load fails what would be pulled now (an installed extension is
	// verified again when its source moves).
	var se *sourceError
	if precheck != nil && (!installed || errors.As(precheck, &se)) {
		return nil, precheck
	}
	src, err := ExpandSource(d.Source, osr, n.arch())
	if err != nil {
		return nil, err
	}
	if installed && !so.DryRun && (cur.Declared != d.File || !cur.Trust.Equal(d.Trust) || cur.AllowUnsigned != d.AllowUnsigned) {
		// The declaration manages it from now on, with its trust.
		if err := s.SetDeclared(d.Name, store.Meta{Declared: d.File, Trust: d.Trust, AllowUnsigned: d.AllowUnsigned}); err != nil {
			return nil, err
		}
	}
	switch {
	case so.Offline && installed && cur.Source == src:
		return &Result{Name: d.Name, Version: cur.Active.Version, Source: src, Action: "unchanged"}, nil
	case so.Offline:
		return &Result{Name: d.Name, Source: src, Action: "needs-download"}, nil
	case installed && cur.Source == src:
		return n.updateOne(ctx, s, d.Name, so.DryRun, d.PolicyFrom())
	}
	// A dry run checks all a pull checks and stops before the download.
	return n.pull(ctx, s, s, PullRequest{Ref: src, Name: d.Name, Trust: d.Trust, AllowUnsigned: d.AllowUnsigned, Declared: d.File, PolicyFrom: d.PolicyFrom(), DryRun: so.DryRun}, nil)
}

// sourceError is a declaration whose Source= is not a reference.
type sourceError struct{ err error }

func (e *sourceError) Error() string { return e.err.Error() }
func (e *sourceError) Unwrap() error { return e.err }

// precheckDeclared returns, by name, what is wrong in declarations before
// any I/O: a source that does not expand to a reference, a trust that does
// not load. Each error names the declaration's file and line. When every
// declaration is wrong, sync has nothing to pull and creates no store.
func (n *Node) precheckDeclared(decl []Declared, osr *extension.Release) map[string]error {
	bad := map[string]error{}
	for _, d := range decl {
		src, err := ExpandSource(d.Source, osr, n.arch())
		if err == nil {
			_, err = oci.ParseReference(src)
		}
		if err != nil {
			bad[d.Name] = &sourceError{fmt.Errorf("%s: Source=%s: %w", d.SourceFrom(), d.Source, err)}
			continue
		}
		if err := n.precheck(PullRequest{Ref: src, Name: d.Name, Trust: d.Trust, AllowUnsigned: d.AllowUnsigned, Declared: d.File, PolicyFrom: d.PolicyFrom()}); err != nil {
			bad[d.Name] = err
		}
	}
	return bad
}

// keepDeclared keeps the declarations of names.
func keepDeclared(decl []Declared, names []string) []Declared {
	var out []Declared
	for _, d := range decl {
		if slices.Contains(names, d.Name) {
			out = append(out, d)
		}
	}
	return out
}

// checkNames says which of names is neither declared nor installed from a
// declaration (which sync then removes).
func checkNames(s *store.Store, decl []Declared, names []string) error {
	for _, name := range names {
		found := slices.ContainsFunc(decl, func(d Declared) bool { return d.Name == name })
		if e, ok := s.Entry(name); !found && (!ok || e.Declared == "") {
			return fmt.Errorf("%s: %w in %s or %s, and not installed from a declaration: see 'sysext sync --help'", name, ErrNotDeclared, DeclaredDirs[0], DeclaredDirs[1])
		}
	}
	return nil
}

// CheckResult says whether one extension has a build for an OS.
type CheckResult struct {
	Name    string `json:"name"`
	Source  string `json:"source"`
	OK      bool   `json:"ok"`
	Version string `json:"version,omitempty"`
	Reason  string `json:"reason,omitempty"`
}

// Check decides, from the registry's manifests alone, whether every
// installed or declared extension has a build compatible with the OS
// described by osr. err is non-nil when one is missing.
func (n *Node) Check(ctx context.Context, osr *extension.Release, osrPath string) ([]CheckResult, error) {
	o := n.opts.Store
	o.ReadOnly = true
	s, err := store.Open(ctx, o)
	if err != nil {
		return nil, err
	}
	defer s.Close()
	decl, err := ReadDeclared(s.Options().Root)
	if err != nil {
		return nil, err
	}
	type item struct{ name, source string }
	var items []item
	seen := map[string]bool{}
	var results []CheckResult
	for _, d := range decl {
		seen[d.Name] = true
		src, err := ExpandSource(d.Source, osr, n.arch())
		if err != nil {
			results = append(results, CheckResult{Name: d.Name, Source: d.Source, Reason: err.Error()})
			continue
		}
		items = append(items, item{d.Name, src})
	}
	for _, name := range s.State().Names() {
		if !seen[name] {
			e, _ := s.Entry(name)
			items = append(items, item{name, e.Source})
		}
	}
	for _, it := range items {
		r := CheckResult{Name: it.name, Source: it.source}
		if err := n.checkOne(ctx, it.name, it.source, osr, osrPath, &r); err != nil {
			r.Reason = err.Error()
		} else {
			r.OK = true
		}
		results = append(results, r)
	}
	var missing []string
	for _, r := range results {
		if !r.OK {
			missing = append(missing, r.Name)
		}
	}
	if len(missing) > 0 {
		return results, fmt.Errorf("%d extension(s) have no build for %s: %v", len(missing), osrPath, missing)
	}
	return results, nil
}

func (n *Node) checkOne(ctx context.Context, name, source string, osr *extension.Release, osrPath string, r *CheckResult) error {
	ref, err := oci.ParseReference(source)
	if err != nil {
		return err
	}
	t, err := oci.Open(ctx, ref, n.opts.OCI)
	if err != nil {
		return err
	}
	res, err := oci.Resolve(ctx, t, ref, n.arch())
	if err != nil {
		return err
	}
	if res.Kind != oci.KindSysext {
		return fmt.Errorf("%s carries no sysext annotations: compatibility cannot be decided without downloading it", ref)
	}
	if res.Metadata.Name != name {
		return fmt.Errorf("%s is extension %q, not %q", ref, res.Metadata.Name, name)
	}
	r.Version = res.Metadata.Version
	return n.compatible(res.Metadata, ref.String(), osr, osrPath)
}
