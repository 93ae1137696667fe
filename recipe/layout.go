package recipe

import (
	"archive/tar"
	"context"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/sysext/sysext/atomicfile"
	"github.com/sysext/sysext/internal/ctxio"
	"github.com/sysext/sysext/internal/extract"
)

// placement is one files:/configs: rule applied while walking a download.
type placement struct {
	who     string // "files[2]" for errors
	from    string
	to      string // image path; a directory when it ends in '/'
	mode    uint32 // 0 = keep the archive's
	matched int
}

func (pl *placement) dest(name string) (string, bool) {
	if strings.HasSuffix(pl.from, "/") {
		dir := strings.TrimSuffix(pl.from, "/")
		if !strings.HasPrefix(name, dir+"/") {
			return "", false
		}
		return pl.to + strings.TrimPrefix(name, dir+"/"), true
	}
	if pl.from == "" { // a plain file download
		return pl.to, true
	}
	if ok, _ := path.Match(pl.from, name); !ok {
		return "", false
	}
	if strings.HasSuffix(pl.to, "/") {
		return pl.to + path.Base(name), true
	}
	return pl.to, true
}

// Layout writes the plan's files into the staged directory root (which must
// exist and be empty), taking download contents from files (download ID ->
// path of the verified download, or of a directory it was unpacked into).
// It reports whether the tree ships systemd units (from units: or from an
// archive), which is when the extension asks for a manager reload on merge.
func (p *Plan) Layout(ctx context.Context, root string, files map[string]string) (hasUnits bool, err error) {
	t := &tree{root: root, written: map[string]string{}}
	err = p.layout(ctx, t, files)
	for path := range t.written {
		hasUnits = hasUnits || strings.Contains(path, "/systemd/system/")
	}
	return hasUnits, err
}

func (p *Plan) layout(ctx context.Context, t *tree, files map[string]string) error {
	rules := map[string][]*placement{}
	for i, f := range p.Files {
		who := fmt.Sprintf("files[%d]", i)
		if f.Content != "" {
			if err := t.writeFile(f.To, who, strings.NewReader(f.Content), fs.FileMode(parseMode(f.Mode, 0o644))); err != nil {
				return err
			}
			continue
		}
		rules[f.Download] = append(rules[f.Download], &placement{who: who, from: f.From, to: f.To, mode: parseMode(f.Mode, 0)})
	}
	var tmpfiles []string
	for i, c := range p.Configs {
		who := fmt.Sprintf("configs[%d]", i)
		share := p.sharePath(c.Path)
		tmpfiles = append(tmpfiles, fmt.Sprintf("C %s - - - - %s", c.Path, share))
		if c.Content != "" {
			if err := t.writeFile(share, who, strings.NewReader(c.Content), fs.FileMode(parseMode(c.Mode, 0o644))); err != nil {
				return err
			}
			continue
		}
		rules[c.Download] = append(rules[c.Download], &placement{who: who, from: c.From, to: share, mode: parseMode(c.Mode, 0o644)})
	}
	for _, d := range p.Downloads {
		rs := rules[d.ID]
		if len(rs) == 0 {
			continue
		}
		file, ok := files[d.ID]
		if !ok {
			return fmt.Errorf("download %s was not fetched", d.ID)
		}
		if err := p.placeDownload(ctx, t, d, file, rs); err != nil {
			return err
		}
	}
	for i, s := range p.Symlinks {
		if err := t.symlink(s.Path, fmt.Sprintf("symlinks[%d]", i), s.Target); err != nil {
			return err
		}
	}
	units := map[string]bool{}
	for i, u := range p.Units {
		units[u.Name] = true
		if err := t.writeFile("/usr/lib/systemd/system/"+u.Name, fmt.Sprintf("units[%d]", i), strings.NewReader(ensureNewline(u.Content)), 0o644); err != nil {
			return err
		}
	}
	for i, d := range p.Dropins {
		if err := t.writeFile("/usr/lib/systemd/system/"+d.Unit+".d/"+d.Name, fmt.Sprintf("dropins[%d]", i), strings.NewReader(ensureNewline(d.Content)), 0o644); err != nil {
			return err
		}
	}
	tmpfiles = append(append([]string{}, p.Tmpfiles...), tmpfiles...)
	if len(tmpfiles) > 0 {
		body := "# Shipped by the " + p.Recipe.Name + " extension; C lines copy default configs once.\n" + strings.Join(tmpfiles, "\n") + "\n"
		if err := t.writeFile("/usr/lib/tmpfiles.d/"+p.Recipe.Name+".conf", "tmpfiles", strings.NewReader(body), 0o644); err != nil {
			return err
		}
	}
	for _, e := range p.Enabled() {
		if !units[e] {
			return fmt.Errorf("recipe %s: enables %s, which it does not ship", p.Recipe.Name, e)
		}
	}
	return nil
}

// placeDownload walks one download and places each entry a file or config
// rule matches; a rule that matches nothing is an error listing what the
// download has.
func (p *Plan) placeDownload(ctx context.Context, t *tree, d PlannedDownload, file string, rs []*placement) error {
	var names []string
	walk, done, err := walker(ctx, t.root, file, d.Format)
	if err != nil {
		return fmt.Errorf("download %s (%s): %w", d.ID, path.Base(d.URL), err)
	}
	err = walk(func(e *entry) error {
		if len(names) < 20 && e.typ != tar.TypeDir {
			names = append(names, e.name)
		}
		for _, pl := range rs {
			dst, ok := pl.dest(e.name)
			if !ok {
				continue
			}
			if e.typ == tar.TypeDir {
				pl.matched++
				continue
			}
			pl.matched++
			switch e.typ {
			case tar.TypeReg:
				mode := e.mode
				if pl.mode != 0 {
					mode = fs.FileMode(pl.mode)
				}
				if mode == 0 {
					mode = 0o644
				}
				if e.src != "" {
					return t.placeFile(dst, pl.who, e.src, mode)
				}
				return t.writeFile(dst, pl.who, e.r, mode)
			case tar.TypeSymlink:
				return t.symlink(dst, pl.who, e.linkname)
			}
		}
		return nil
	})
	done()
	if err != nil {
		return fmt.Errorf("download %s (%s): %w", d.ID, path.Base(d.URL), err)
	}
	for _, pl := range rs {
		if pl.matched == 0 {
			return fmt.Errorf("recipe %s: %s: nothing in download %s (%s) matches %q; it has %s", p.Recipe.Name, pl.who, d.ID, path.Base(d.URL), pl.from, strings.Join(names, ", "))
		}
	}
	return nil
}

// walker returns how to walk the download at file: a directory it was
// unpacked into (the cache's, as Bake passes), a plain file, or an
// archive, which is unpacked first into a temp directory next to root
// (hard links from there are cheap; bounded by the free space there) that
// done removes.
func walker(ctx context.Context, root, file, format string) (walk func(func(*entry) error) error, done func(), err error) {
	done = func() {}
	if st, err := os.Stat(file); err == nil && st.IsDir() {
		return func(fn func(*entry) error) error { return walkTree(ctx, file, fn) }, done, nil
	}
	if format == "file" {
		return func(fn func(*entry) error) error {
			f, err := os.Open(file)
			if err != nil {
				return err
			}
			defer f.Close()
			return fn(&entry{name: "", mode: 0o755, typ: tar.TypeReg, r: ctxio.Reader(ctx, f)})
		}, done, nil
	}
	tmp, err := os.MkdirTemp(filepath.Dir(root), atomicfile.TempPrefix+"unpack-")
	if err != nil {
		return nil, done, err
	}
	done = func() { os.RemoveAll(tmp) }
	budget, err := extract.NewBudget(0, tmp)
	if err == nil {
		err = unpack(ctx, file, format, tmp, budget)
	}
	if err != nil {
		done()
		return nil, func() {}, err
	}
	return func(fn func(*entry) error) error { return walkTree(ctx, tmp, fn) }, done, nil
}

func ensureNewline(s string) string {
	if strings.HasSuffix(s, "\n") {
		return s
	}
	return s + "\n"
}
