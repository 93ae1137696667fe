package node

import (
	"context"
	"errors"
	"fmt"
	"sort"

	"github.com/sysext/sysext/extension"
	"github.com/sysext/sysext/oci"
	"github.com/sysext/sysext/store"
)

// UpdateOptions select what update looks at.
type UpdateOptions struct {
	Names  []string // empty with All: every installed extension
	All    bool
	DryRun bool
}

// Update re-resolves each installed extension's source: one manifest
// request when the tag did not move; a moved tag is pulled as by Pull. It
// returns one Result per extension; err joins the failures.
func (n *Node) Update(ctx context.Context, uo UpdateOptions) ([]Result, error) {
	if len(uo.Names) == 0 && !uo.All {
		return nil, errors.New("name the extensions to update, or use --all")
	}
	s, err := n.openExisting(ctx)
	if err != nil {
		return nil, err
	}
	defer s.Close()
	n.resume(ctx, s, false)
	names := uo.Names
	if len(names) == 0 {
		names = s.State().Names()
	}
	var results []Result
	var errs []error
	for _, name := range names {
		r, err := n.updateOne(ctx, s, name, uo.DryRun, "")
		if err != nil {
			errs = append(errs, err)
			if r == nil {
				r = &Result{Name: name}
			}
			r.Action, r.Error = "failed", err.Error()
		}
		results = append(results, *r)
	}
	return results, errors.Join(errs...)
}

// updateOne re-resolves NAME's source; policyFrom is "FILE:LINE" of the
// declaration whose Policy= the entry records (sync), for errors.
func (n *Node) updateOne(ctx context.Context, s *store.Store, name string, dryRun bool, policyFrom string) (*Result, error) {
	e, ok := s.Entry(name)
	if !ok {
		return nil, &store.NotInstalledError{Name: name}
	}
	r := &Result{Name: name, Version: e.Active.Version, From: e.Active.Version, Digest: e.Active.ManifestDigest.String(), Source: e.Source, Action: "unchanged"}
	ref, err := oci.ParseReference(e.Source)
	if err != nil {
		return r, fmt.Errorf("%s: recorded source: %w", name, err)
	}
	if ref.Digest != "" {
		return r, nil // pinned by digest: nothing can move
	}
	t, err := n.openRef(ctx, ref)
	if err != nil {
		return r, err
	}
	// One request when nothing moved (a conditional GET: oci.CheckTag).
	chk, err := oci.CheckTag(ctx, t, ref, e.Active.ResolvedDigest)
	r.Sources = oci.SourceEvents(t)
	if err != nil {
		return r, fmt.Errorf("%s: %w", name, err)
	}
	if !chk.Changed {
		return r, nil
	}
	desc := chk.Root
	// A build that failed to merge and was rolled back is not tried again
	// by update (a timer would flap); an explicit pull tries it.
	if e.Activation.Status == extension.ActivationRolledBack {
		for _, p := range e.Previous {
			if p.File == e.Activation.Tried && p.ResolvedDigest == desc.Digest {
				r.Action = "skipped"
				r.Error = fmt.Sprintf("%s %s did not merge earlier (%s); not retried: run 'sysext pull %s' to try it again", name, p.Version, e.Activation.Reason, e.Source)
				return r, nil
			}
		}
	}
	// A dry run checks the new build as a pull would (signature,
	// compatibility, preflight) and stops before the download.
	pr, err := n.pull(ctx, s, s, PullRequest{Ref: e.Source, Name: name, Trust: e.Trust, AllowUnsigned: e.AllowUnsigned, Declared: e.Declared, PolicyFrom: policyFrom, DryRun: dryRun}, &resolvedRef{t: t, ref: ref, root: desc, body: chk.Body})
	if pr == nil {
		return r, err
	}
	pr.From = e.Active.Version
	return pr, err
}

// Rollback makes NAME's previous stored version active again, then
// refreshes as a pull does.
func (n *Node) Rollback(ctx context.Context, name string) (*Result, error) {
	s, err := n.openExisting(ctx)
	if err != nil {
		return nil, err
	}
	defer s.Close()
	n.resume(ctx, s, false)
	cur, ok := s.Entry(name)
	if !ok {
		return nil, &store.NotInstalledError{Name: name}
	}
	in, err := s.Rollback(name)
	if err != nil {
		return nil, err
	}
	n.hook("rolled-back")
	r := &Result{Name: name, Version: in.Version, From: cur.Active.Version, Digest: in.ManifestDigest.String(), File: in.File, Changed: true, Action: "rolled-back", Source: cur.Source}
	prev := cur.Active
	status, err := n.activate(ctx, s, name, in, &prev)
	r.Activation = status
	return r, err
}

// Remove deactivates NAME, refreshes, and deletes its stored images.
func (n *Node) Remove(ctx context.Context, name string) (*Result, error) {
	s, err := n.openExisting(ctx)
	if err != nil {
		return nil, err
	}
	defer s.Close()
	return n.remove(ctx, s, name)
}

func (n *Node) remove(ctx context.Context, s *store.Store, name string) (*Result, error) {
	cur, ok := s.Entry(name)
	if !ok {
		return nil, &store.NotInstalledError{Name: name}
	}
	if err := s.Remove(name); err != nil {
		return nil, err
	}
	n.hook("removed")
	r := &Result{Name: name, From: cur.Active.Version, Changed: true, Action: "removed", Source: cur.Source}
	if !n.offline() {
		if err := n.refresher().Refresh(ctx); err != nil {
			return r, fmt.Errorf("%s: removed, but refreshing systemd-sysext failed: %w", name, err)
		}
	}
	return r, nil
}

// GC removes stored versions beyond keep per extension (never the active
// one) and stored files nothing records. It returns the removed files.
func (n *Node) GC(ctx context.Context, keep int) ([]string, error) {
	if keep < 1 {
		return nil, fmt.Errorf("--keep %d: keep at least 1 (the active version is never removed)", keep)
	}
	s, err := n.openExisting(ctx)
	if err != nil {
		return nil, err
	}
	defer s.Close()
	return s.GC(keep)
}

// Listing is what list shows.
type Listing struct {
	Extensions []ListEntry `json:"extensions"`
	// StateError is set when the state file is unreadable; Seen then shows
	// what the disk holds.
	StateError string       `json:"state_error,omitempty"`
	Seen       []store.Seen `json:"seen,omitempty"`
	// Locked is set when another sysext held the lock and the listing was
	// read without it (an interrupted change may not be settled yet).
	Locked string `json:"locked,omitempty"`
}

// ListEntry is one installed extension.
type ListEntry struct {
	store.Entry
	Linked bool `json:"linked"` // the activation link points at the active image
}

// List returns the installed extensions. A corrupt state is reported in
// the Listing (with what the disk shows), not as an error.
//
// List is a read-only command: it takes no lock and writes nothing (an
// interrupted change shows as pending until the next writer settles it).
func (n *Node) List(ctx context.Context) (*Listing, error) {
	o := n.opts.Store
	o.ReadOnly = true
	s, err := store.Open(ctx, o)
	l := &Listing{}
	var ce *store.CorruptStateError
	if errors.As(err, &ce) {
		l.StateError = err.Error()
		l.Seen, _ = store.Scan(o)
		return l, nil
	}
	if err != nil {
		return nil, err
	}
	defer s.Close()
	st := s.State()
	for _, name := range st.Names() {
		e := st.Extensions[name]
		l.Extensions = append(l.Extensions, ListEntry{Entry: *e, Linked: s.LinkTargetIs(name, e.Active.File)})
	}
	sort.Slice(l.Extensions, func(i, j int) bool { return l.Extensions[i].Name < l.Extensions[j].Name })
	return l, nil
}
