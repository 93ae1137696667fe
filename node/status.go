package node

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"github.com/sysext/sysext/activate"
	"github.com/sysext/sysext/extension"
	"github.com/sysext/sysext/internal/inroot"
	"github.com/sysext/sysext/internal/osrelease"
	"github.com/sysext/sysext/store"
)

// ExtensionStatus is one extension seen three ways: what sysext's state
// says (installed, active, pending), what the extension directories hold
// (the file systemd-sysext will pick), and what systemd-sysext merged.
type ExtensionStatus struct {
	Name string `json:"name"`

	// Our view, from the node's state file.
	Installed  bool                       `json:"installed"`
	Active     string                     `json:"active,omitempty"` // active version
	File       string                     `json:"file,omitempty"`   // active stored file
	Previous   []string                   `json:"previous,omitempty"`
	Activation extension.ActivationStatus `json:"activation,omitempty"`
	Reason     string                     `json:"reason,omitempty"`
	Interrupt  string                     `json:"interrupted,omitempty"` // an interrupted store change (activate, remove)

	// The extension directories: the entry systemd-sysext uses (first name
	// wins) and where it points.
	Path   string `json:"path,omitempty"`
	Target string `json:"target,omitempty"`

	// systemd-sysext's view (only on the running system).
	Merged        bool   `json:"merged"`
	MergedVersion string `json:"merged_version,omitempty"` // from the merged extension-release

	// Differences between the views, each a sentence with the way out.
	Differences []string `json:"differences,omitempty"`
	// Notes are worth knowing but not a difference (a past rollback).
	Notes []string `json:"notes,omitempty"`

	// Verity is a disk image's dm-verity protection: who signed it and
	// whether the kernel enforces it now (verity.go).
	Verity *VerityStatus `json:"verity,omitempty"`
}

// StatusReport is `sysext status`.
type StatusReport struct {
	Root string `json:"root"`
	// Online is set when systemd-sysext was asked (the running system).
	Online     bool              `json:"online"`
	Merged     activate.Merged   `json:"merged,omitempty"` // hierarchy → extensions
	Extensions []ExtensionStatus `json:"extensions"`
	Errors     []string          `json:"errors,omitempty"` // views that could not be read
	byName     map[string]*ExtensionStatus
}

// Differences counts the flagged differences.
func (r *StatusReport) Differences() int {
	n := 0
	for _, e := range r.Extensions {
		n += len(e.Differences)
	}
	return n
}

// StatusOptions say where to look.
type StatusOptions struct {
	// Store locates the node's state, links and images (Root included).
	Store store.Options
	// AskSystemd asks systemd-sysext what is merged and reads the merged
	// /usr under Root; set it only for the running system.
	AskSystemd bool
	Sysext     activate.Sysext
	// System is where the kernel's verity facts are read (the zero value:
	// the running system; Root is taken from Store).
	System activate.System
}

// ReadStatus reads the three views and flags every difference. It never
// writes and takes no lock. A state file that cannot be read is reported
// in Errors and the other views are still shown.
func ReadStatus(ctx context.Context, opts StatusOptions) (*StatusReport, error) {
	so := opts.Store
	so.ReadOnly = true
	root := so.Root
	if root == "" {
		root = "/"
	}
	r := &StatusReport{Root: root, Online: opts.AskSystemd, Extensions: []ExtensionStatus{}, byName: map[string]*ExtensionStatus{}}
	s, err := store.Open(ctx, so)
	if err != nil {
		var ce *store.CorruptStateError
		if !errors.As(err, &ce) {
			return nil, err
		}
		r.Errors = append(r.Errors, err.Error())
	}
	extDir := so.ExtensionsDir
	if s != nil {
		defer s.Close()
		extDir = s.Options().ExtensionsDir
		st := s.State()
		for _, name := range st.Names() {
			e := st.Extensions[name]
			x := r.get(name)
			x.Installed = true
			x.Active, x.File = e.Active.Version, e.Active.File
			for _, p := range e.Previous {
				x.Previous = append(x.Previous, p.Version)
			}
			x.Activation, x.Reason = e.Activation.Status, e.Activation.Reason
			if e.Pending != nil {
				x.Interrupt = e.Pending.Op
			}
			x.Verity = verityStatusOf(e.Active.Verity)
		}
	}
	if extDir == "" {
		extDir = store.DefaultExtensionsDir
	}
	r.scanDirs(root, extDir)
	if opts.AskSystemd {
		m, err := opts.Sysext.Status(ctx)
		if err != nil {
			r.Errors = append(r.Errors, err.Error())
		} else {
			r.Merged = m
			for _, name := range m.Names() {
				x := r.get(name)
				x.Merged = true
				if rel, err := osrelease.ReadIn(root, extension.ReleasePath(name)); err == nil {
					if meta, err := extension.MetadataFromRelease(name, rel); err == nil {
						x.MergedVersion = meta.Version
					}
				}
			}
		}
	}
	r.verityEnforcement(opts.System)
	for i := range r.Extensions {
		x := &r.Extensions[i]
		x.Differences, x.Notes = differences(x, r.Online && r.Merged != nil, r.Online, extDir)
	}
	sort.Slice(r.Extensions, func(i, j int) bool { return r.Extensions[i].Name < r.Extensions[j].Name })
	return r, nil
}

func (r *StatusReport) get(name string) *ExtensionStatus {
	if x, ok := r.byName[name]; ok {
		return x
	}
	r.Extensions = append(r.Extensions, ExtensionStatus{Name: name})
	// Pointers into the slice move when it grows: index by name afresh.
	r.byName = map[string]*ExtensionStatus{}
	for i := range r.Extensions {
		r.byName[r.Extensions[i].Name] = &r.Extensions[i]
	}
	return r.byName[name]
}

// scanDirs finds, for every extension, the entry systemd-sysext would use:
// the first of its search directories (and ours, when it is another) that
// holds NAME.raw or a NAME directory.
func (r *StatusReport) scanDirs(root, extDir string) {
	dirs := append([]string{}, store.SearchDirs...)
	if !slices.Contains(dirs, filepath.Clean(extDir)) {
		dirs = append(dirs, filepath.Clean(extDir))
	}
	for _, d := range dirs {
		ents, err := inroot.ReadDir(root, d)
		if err != nil {
			continue
		}
		for _, e := range ents {
			n := e.Name()
			if strings.HasPrefix(n, ".") {
				continue
			}
			name := strings.TrimSuffix(n, extension.ImageSuffix)
			if name == n && !e.IsDir() && e.Type()&os.ModeSymlink == 0 {
				continue
			}
			if extension.ValidateName(name) != nil {
				continue
			}
			x := r.get(name)
			if x.Path != "" {
				continue // an earlier directory wins
			}
			x.Path = filepath.Join(d, n)
			if p, err := inroot.JoinParent(root, filepath.Join(d, n)); err == nil {
				if t, err := os.Readlink(p); err == nil {
					x.Target = t
				}
			}
		}
	}
}

// differences compares the views of one extension. merged says whether
// systemd-sysext's view is there; running, whether this is the running
// system (where an unproven activation should have been proven).
func differences(x *ExtensionStatus, merged, running bool, extDir string) (d, notes []string) {
	online := merged
	own := filepath.Join(filepath.Clean(extDir), x.Name+extension.ImageSuffix)
	if x.Installed {
		switch x.Activation {
		case extension.ActivationPending, extension.ActivationRefreshed:
			d = append(d, fmt.Sprintf("the activation of %s %s was not proven (%s): the next 'sysext update' or 'sysext sync' finishes it", x.Name, x.Active, x.Activation))
		case extension.ActivationUnproven:
			msg := fmt.Sprintf("%s %s was activated offline and is not proven yet: 'sysext sync' on the running system proves it", x.Name, x.Active)
			if running {
				d = append(d, msg)
			} else {
				notes = append(notes, msg)
			}
		case extension.ActivationRolledBack:
			notes = append(notes, fmt.Sprintf("the last update of %s was rolled back: %s", x.Name, x.Reason))
		case extension.ActivationFailed:
			d = append(d, fmt.Sprintf("the last activation of %s failed and was not restored: %s; run 'sysext rollback %s' or 'sysext sync'", x.Name, x.Reason, x.Name))
		}
		if x.Interrupt != "" {
			d = append(d, fmt.Sprintf("an interrupted %s of %s is recorded: the next sysext command that changes the node finishes it", x.Interrupt, x.Name))
		}
		switch {
		case x.Path == "":
			d = append(d, fmt.Sprintf("%s is installed but %s is missing: run 'sysext rollback %s' or pull it again", x.Name, own, x.Name))
		case x.Path != own:
			d = append(d, fmt.Sprintf("systemd-sysext uses %s, which shadows sysext's %s: remove it if sysext should manage %s", x.Path, own, x.Name))
		case x.File != "" && filepath.Base(x.Target) != x.File:
			d = append(d, fmt.Sprintf("%s points at %s, the state says %s is active: run 'sysext sync' to repair", own, x.Target, x.File))
		}
		if online {
			switch {
			case !x.Merged:
				d = append(d, fmt.Sprintf("%s is installed but not merged: run 'systemd-sysext refresh' (or 'systemctl restart systemd-sysext' before systemd 257) and check 'systemd-sysext status'", x.Name))
			case x.MergedVersion != "" && x.Active != "" && x.MergedVersion != x.Active:
				d = append(d, fmt.Sprintf("version %s is merged but %s is active: refresh systemd-sysext", x.MergedVersion, x.Active))
			}
		}
	} else if x.Path == own {
		d = append(d, fmt.Sprintf("%s is in sysext's extensions directory but not in its state: it is left alone; pull it to manage it", own))
	}
	if online && x.Path != "" && !x.Merged && !x.Installed {
		d = append(d, fmt.Sprintf("%s is in %s but not merged: systemd-sysext ignored it or was not refreshed", x.Name, filepath.Dir(x.Path)))
	}
	return d, notes
}
