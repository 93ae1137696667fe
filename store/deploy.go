package store

import (
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/sysext/sysext/extension"
	"github.com/sysext/sysext/internal/inroot"
)

// OstreeBooted reports whether the system under root was booted by ostree
// (bootc, Fedora CoreOS, Silverblue): then /etc belongs to a deployment.
func OstreeBooted(root string) bool {
	if root == "" {
		root = "/"
	}
	_, err := inroot.Stat(root, "/run/ostree-booted")
	return err == nil
}

// DefaultPerDeployment says whether links and state belong in the
// deployment's /etc when nobody said: on a running system booted by
// ostree, or for a root that is a deployment checkout. Copy mode and an
// explicit extensions directory never are (the caller's choice).
func DefaultPerDeployment(root string) bool {
	return (Options{Root: root}.RunningSystem() && OstreeBooted("/")) || IsDeploymentDir(root)
}

// IsDeploymentDir reports whether dir looks like an ostree deployment
// checkout (.../ostree/deploy/OS/deploy/CHECKSUM.N).
func IsDeploymentDir(dir string) bool {
	d := filepath.Clean(dir)
	parent := filepath.Dir(d)
	return filepath.Base(parent) == "deploy" && filepath.Base(filepath.Dir(filepath.Dir(parent))) == "deploy" &&
		filepath.Base(filepath.Dir(filepath.Dir(filepath.Dir(parent)))) == "ostree"
}

// otherDeployments lists the deployment roots that share our store, not
// counting our own root.
func (s *Store) otherDeployments() []string {
	root := filepath.Clean(s.opts.Root)
	var globs []string
	if IsDeploymentDir(root) {
		globs = append(globs, filepath.Join(filepath.Dir(root), "*"))
	}
	globs = append(globs, filepath.Join(root, "sysroot/ostree/deploy/*/deploy/*"), filepath.Join(root, "ostree/deploy/*/deploy/*"))
	seen := map[string]bool{}
	var out []string
	for _, g := range globs {
		m, _ := filepath.Glob(g)
		for _, d := range m {
			d = filepath.Clean(d)
			if d == root || seen[d] || strings.HasSuffix(d, ".origin") {
				continue
			}
			if fi, err := os.Stat(d); err != nil || !fi.IsDir() {
				continue
			}
			seen[d] = true
			out = append(out, d)
		}
	}
	sort.Strings(out)
	return out
}

// unknownUse in usedElsewhere's result means another deployment's use is
// unknown: nothing shared may be deleted.
const unknownUse = "*"

// usedElsewhere returns the store paths (as seen on the running system)
// that other deployments' links and states use. Only per-deployment stores
// share images.
func (s *Store) usedElsewhere() map[string]bool {
	used := map[string]bool{}
	if !s.opts.PerDeployment {
		return used
	}
	for _, d := range s.otherDeployments() {
		extDir, err := inroot.Join(d, s.opts.ExtensionsDir)
		if err != nil {
			used[unknownUse] = true
			continue
		}
		links, _ := filepath.Glob(filepath.Join(extDir, "*"+extension.ImageSuffix))
		for _, l := range links {
			if t, err := os.Readlink(l); err == nil {
				used[filepath.Clean(t)] = true
			}
		}
		stateFile, err := inroot.Join(d, s.opts.StateFile)
		if err != nil {
			used[unknownUse] = true
			continue
		}
		st, err := readState(stateFile)
		if err != nil {
			// An unreadable state elsewhere: keep everything it might use.
			used[unknownUse] = true
			continue
		}
		for name, e := range st.Extensions {
			for _, in := range append([]Install{e.Active}, e.Previous...) {
				used[s.linkTarget(name, in.File)] = true
			}
		}
	}
	return used
}

// Seen is what the disk shows for one extension when the state cannot be
// read: its link (or file) and the stored images.
type Seen struct {
	Name   string
	Link   string   // the link or file in the extensions directory, under Root
	Target string   // where the link points ("" for a file)
	Ours   bool     // the link points into our store
	Stored []string // stored files, newest first by time
}

// Scan reads the extensions directory and the store without the state
// file, so that list can still explain a node whose state is corrupt.
func Scan(opts Options) ([]Seen, error) {
	opts = opts.withDefaults()
	s := &Store{opts: opts}
	byName := map[string]*Seen{}
	get := func(n string) *Seen {
		if byName[n] == nil {
			byName[n] = &Seen{Name: n}
		}
		return byName[n]
	}
	ents, err := os.ReadDir(s.path(opts.ExtensionsDir))
	if err != nil && !os.IsNotExist(err) {
		return nil, err
	}
	for _, e := range ents {
		n, ok := strings.CutSuffix(e.Name(), extension.ImageSuffix)
		if !ok || extension.ValidateName(n) != nil {
			continue
		}
		sn := get(n)
		sn.Link = s.linkPath(filepath.Join(opts.ExtensionsDir, e.Name()))
		if fi, err := os.Lstat(sn.Link); err == nil {
			sn.Target, _ = os.Readlink(sn.Link)
			sn.Ours = s.isOurs(n, sn.Link, fi)
		}
	}
	dirs, _ := os.ReadDir(s.path(opts.StoreDir))
	for _, d := range dirs {
		if !d.IsDir() || extension.ValidateName(d.Name()) != nil {
			continue
		}
		files, _ := os.ReadDir(s.path(s.nameDir(d.Name())))
		type ft struct {
			name string
			mod  int64
		}
		var fts []ft
		for _, f := range files {
			if strings.HasSuffix(f.Name(), extension.ImageSuffix) && !strings.HasPrefix(f.Name(), ".") {
				if fi, err := f.Info(); err == nil {
					fts = append(fts, ft{f.Name(), fi.ModTime().UnixNano()})
				}
			}
		}
		sort.Slice(fts, func(i, j int) bool { return fts[i].mod > fts[j].mod })
		sn := get(d.Name())
		for _, f := range fts {
			sn.Stored = append(sn.Stored, f.name)
		}
	}
	out := make([]Seen, 0, len(byName))
	for _, v := range byName {
		out = append(out, *v)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}
