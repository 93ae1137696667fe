package node

import (
	"context"
	"errors"
	"fmt"

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
}

// Sync makes the installed set equal to the declared set: pulls what is
// missing, updates what moved, removes what is no longer declared. Only
// extensions installed from a declaration are removed; ones pulled by hand
// are kept, and files sysext did not install are never touched.
func (n *Node) Sync(ctx context.Context, so SyncOptions) ([]Result, error) {
	s, err := n.open(ctx)
	if err != nil {
		return nil, err
	}
	defer s.Close()
	n.resume(ctx, s, true)
	root := s.Options().Root
	decl, err := ReadDeclared(root)
	if err != nil {
		return nil, err
	}
	osr, _, err := OSRelease(root)
	if err != nil {
		return nil, err
	}
	var results []Result
	var errs []error
	fail := func(name string, err error) {
		errs = append(errs, err)
		results = append(results, Result{Name: name, Action: "failed", Error: err.Error()})
	}
	declared := map[string]bool{}
	for _, d := range decl {
		declared[d.Name] = true
		src, err := ExpandSource(d.Source, osr, n.arch())
		if err != nil {
			fail(d.Name, fmt.Errorf("%s: %w", d.File, err))
			continue
		}
		cur, installed := s.Entry(d.Name)
		if installed && cur.Declared != d.File && !so.DryRun {
			if err := s.SetDeclared(d.Name, d.File); err != nil {
				fail(d.Name, err)
				continue
			}
		}
		switch {
		case so.Offline && installed && cur.Source == src:
			results = append(results, Result{Name: d.Name, Version: cur.Active.Version, Source: src, Action: "unchanged"})
			continue
		case so.Offline:
			results = append(results, Result{Name: d.Name, Source: src, Action: "needs-download"})
			continue
		case installed && cur.Source == src:
			r, err := n.updateOne(ctx, s, d.Name, so.DryRun)
			if err != nil {
				fail(d.Name, err)
				continue
			}
			results = append(results, *r)
			continue
		case so.DryRun:
			results = append(results, Result{Name: d.Name, Source: src, Action: "would-pull"})
			continue
		}
		r, err := n.pull(ctx, s, s, PullRequest{Ref: src, Name: d.Name, Policy: d.Policy, AllowUnsigned: d.AllowUnsigned, Declared: d.File}, nil)
		if err != nil {
			fail(d.Name, err)
			continue
		}
		results = append(results, *r)
	}
	for _, name := range s.State().Names() {
		e, _ := s.Entry(name)
		if declared[name] || e.Declared == "" {
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
