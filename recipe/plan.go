package recipe

import (
	"errors"
	"fmt"
	"net/url"
	"path"
	"sort"
	"strings"

	"github.com/sysext/sysext/extension"
)

// Plan is a recipe resolved for one version, architecture and set of
// options: the URLs to fetch, their checksums, and what goes into the tree.
type Plan struct {
	Recipe    *Recipe
	Version   string
	Arch      extension.Arch
	Options   map[string]string // every declared option, defaults filled in
	Downloads []PlannedDownload
	Files     []File // with from: expanded; only those whose when: holds
	Symlinks  []Symlink
	Units     []Unit
	Dropins   []Dropin
	Configs   []Config
	Tmpfiles  []string
}

// PlannedDownload is one download with its templates expanded.
type PlannedDownload struct {
	ID            string
	URL           string
	Format        string
	SHA256        string // pinned (recipe or caller); "" = from the checksum file
	ChecksumURL   string // "" when none
	ChecksumEntry string // the name to look up in the checksum file
}

// ErrArch, ErrVersion and ErrOption classify Resolve's errors.
var (
	ErrArch    = errors.New("architecture not offered")
	ErrVersion = errors.New("version does not match")
	ErrOption  = errors.New("bad option")
)

// resolveError carries one of the sentinels above without printing it.
type resolveError struct {
	kind error
	msg  string
}

func (e *resolveError) Error() string { return e.msg }
func (e *resolveError) Unwrap() error { return e.kind }

func errorf(kind error, format string, args ...any) error {
	return &resolveError{kind, fmt.Sprintf(format, args...)}
}

// ResolveOptions are the caller's choices.
type ResolveOptions struct {
	Version string
	Arch    extension.Arch    // "" = the host's
	Options map[string]string // --option NAME=VALUE
	SHA256  map[string]string // download ID -> pinned sha256, overriding the recipe
}

// Resolve checks the caller's choices against the recipe and expands its
// templates.
func (r *Recipe) Resolve(o ResolveOptions) (*Plan, error) {
	arch := o.Arch
	if arch == "" {
		arch = extension.HostArch()
	}
	vars, ok := r.Arches[string(arch)]
	if !ok {
		names := make([]string, 0, len(r.Arches))
		for _, a := range r.ArchList() {
			names = append(names, string(a))
		}
		return nil, errorf(ErrArch, "recipe %s is not offered for %s: it offers %s (use --arch)", r.Name, arch, strings.Join(names, ", "))
	}
	if err := r.checkVersion(o.Version); err != nil {
		return nil, err
	}
	opts, err := r.chosenOptions(o.Options)
	if err != nil {
		return nil, err
	}
	if err := r.checkPins(o.SHA256); err != nil {
		return nil, err
	}
	env := templateEnv(o.Version, arch, vars, opts)
	holds := func(s string) bool {
		if s == "" {
			return true
		}
		w, _ := parseWhen(s)
		return (opts[w.option] == w.value) == w.equal
	}

	p := &Plan{Recipe: r, Version: o.Version, Arch: arch, Options: opts}
	active := map[string]bool{}
	for _, d := range r.Downloads {
		if !holds(d.When) {
			continue
		}
		active[d.ID] = true
		pd, err := r.planDownload(d, env, o.SHA256[d.ID], o.Version, arch)
		if err != nil {
			return nil, err
		}
		p.Downloads = append(p.Downloads, pd)
	}
	src := sources{r: r, env: env, active: active}
	if len(r.Downloads) == 1 {
		src.only = r.Downloads[0].ID
	}
	for i, f := range r.Files {
		if holds(f.When) {
			if err := src.take(fmt.Sprintf("files[%d]", i), f.Content, &f.Download, &f.From); err != nil {
				return nil, err
			}
			p.Files = append(p.Files, f)
		}
	}
	for i, c := range r.Configs {
		if holds(c.When) {
			if err := src.take(fmt.Sprintf("configs[%d]", i), c.Content, &c.Download, &c.From); err != nil {
				return nil, err
			}
			p.Configs = append(p.Configs, c)
		}
	}
	for _, s := range r.Symlinks {
		if holds(s.When) {
			p.Symlinks = append(p.Symlinks, s)
		}
	}
	for _, u := range r.Units {
		if holds(u.When) {
			p.Units = append(p.Units, u)
		}
	}
	for _, d := range r.Dropins {
		if holds(d.When) {
			p.Dropins = append(p.Dropins, d)
		}
	}
	p.Tmpfiles = append(p.Tmpfiles, r.Tmpfiles...)
	return p, nil
}

// sources resolves where files and configs take their bytes from.
type sources struct {
	r      *Recipe
	env    map[string]string
	active map[string]bool // the downloads these options keep
	only   string          // the id of the recipe's only download, the default
}

// take resolves one entry's source: its inline content, or a download
// these options keep (the only one by default), at a path expanded from
// the templates.
func (s sources) take(what, content string, download, from *string) error {
	if content != "" {
		return nil
	}
	if *download == "" {
		*download = s.only
	}
	if !s.active[*download] {
		return fmt.Errorf("recipe %s: %s takes from download %s, which these options leave out", s.r.Name, what, *download)
	}
	var err error
	if *from, err = expand(*from, s.env); err != nil {
		return fmt.Errorf("recipe %s: %s: %w", s.r.Name, what, err)
	}
	return nil
}

// checkVersion checks the version asked for against the recipe's pattern
// and systemd's version characters.
func (r *Recipe) checkVersion(version string) error {
	if version == "" {
		return errorf(ErrVersion, "recipe %s: no version given: use --version (e.g. %s)", r.Name, r.Version.Example)
	}
	if !r.versionRe().MatchString(version) {
		ex := ""
		if r.Version.Example != "" {
			ex = fmt.Sprintf(", e.g. %s", r.Version.Example)
		}
		return errorf(ErrVersion, "recipe %s: version %q does not match the recipe's pattern '%s'%s", r.Name, version, r.Version.Pattern, ex)
	}
	if err := extension.ValidateVersion(version); err != nil {
		return errorf(ErrVersion, "recipe %s: %v", r.Name, err)
	}
	return nil
}

// chosenOptions is every option's value: the recipe's default unless the
// caller chose one the option allows.
func (r *Recipe) chosenOptions(chosen map[string]string) (map[string]string, error) {
	opts := map[string]string{}
	for _, opt := range r.Options {
		opts[opt.Name] = opt.Default
	}
	for _, k := range sortedKeys(chosen) {
		opt, ok := r.option(k)
		if !ok {
			if len(r.Options) == 0 {
				return nil, errorf(ErrOption, "recipe %s: unknown option %q: the recipe has no options", r.Name, k)
			}
			names := make([]string, len(r.Options))
			for i, x := range r.Options {
				names[i] = x.Name
			}
			return nil, errorf(ErrOption, "recipe %s: unknown option %q: use one of %s", r.Name, k, strings.Join(names, ", "))
		}
		if err := opt.check(chosen[k]); err != nil {
			return nil, errorf(ErrOption, "recipe %s: %v", r.Name, err)
		}
		opts[k] = chosen[k]
	}
	return opts, nil
}

// checkPins checks --sha256 ID=SUM: a download of that id, a sha256.
func (r *Recipe) checkPins(pins map[string]string) error {
	for id := range pins {
		found := false
		for _, d := range r.Downloads {
			found = found || d.ID == id
		}
		if !found {
			return errorf(ErrOption, "recipe %s: --sha256 %s=...: no download has that id", r.Name, id)
		}
		if !hexSum().MatchString(pins[id]) {
			return errorf(ErrOption, "recipe %s: --sha256 %s=%q is not a sha256 (64 lower-case hex digits)", r.Name, id, pins[id])
		}
	}
	return nil
}

// templateEnv is what the recipe's templates may name: version,
// bare_version, arch, goarch, uname, the architecture's variables and the
// options.
func templateEnv(version string, arch extension.Arch, vars, opts map[string]string) map[string]string {
	goarch, _ := arch.OCIPlatform()
	env := map[string]string{
		"version":      version,
		"bare_version": strings.TrimPrefix(version, "v"),
		"arch":         string(arch),
		"goarch":       goarch,
		"uname":        arch.Upstream(),
	}
	for k, v := range vars {
		env[k] = v
	}
	for k, v := range opts {
		env[k] = v
	}
	return env
}

// planDownload expands a download's URL and checksum source and picks its
// pinned sha256 (the caller's, else the recipe's for this version and
// architecture).
func (r *Recipe) planDownload(d Download, env map[string]string, pin, version string, arch extension.Arch) (PlannedDownload, error) {
	u, err := expand(d.URL, env)
	if err != nil {
		return PlannedDownload{}, fmt.Errorf("recipe %s: download %s: %w", r.Name, d.ID, err)
	}
	pu, err := url.Parse(u)
	if err != nil || pu.Host == "" || (pu.Scheme != "https" && pu.Scheme != "http") {
		return PlannedDownload{}, fmt.Errorf("recipe %s: download %s: %q is not a valid http(s) URL", r.Name, d.ID, u)
	}
	pd := PlannedDownload{ID: d.ID, URL: u, Format: FormatOf(d, u), SHA256: pin}
	if pd.SHA256 == "" {
		pd.SHA256 = d.SHA256[version][string(arch)]
	}
	if d.Checksum != nil {
		cenv := map[string]string{"url": u, "file": path.Base(pu.Path)}
		for k, v := range env {
			cenv[k] = v
		}
		if pd.ChecksumURL, err = expand(d.Checksum.URL, cenv); err != nil {
			return pd, fmt.Errorf("recipe %s: download %s: checksum: %w", r.Name, d.ID, err)
		}
		pd.ChecksumEntry = path.Base(pu.Path)
		if d.Checksum.Entry != "" {
			if pd.ChecksumEntry, err = expand(d.Checksum.Entry, cenv); err != nil {
				return pd, fmt.Errorf("recipe %s: download %s: checksum: %w", r.Name, d.ID, err)
			}
		}
	}
	return pd, nil
}

// Enabled lists the units the plan enables (upheld by their targets).
func (p *Plan) Enabled() []string {
	var out []string
	for _, u := range p.Units {
		if u.Enable {
			out = append(out, u.Name)
		}
	}
	sort.Strings(out)
	return out
}

// sharePath is where a config for /etc/REL ships inside the image:
// /usr/share/NAME/REL, without REL's leading NAME/ directory
// (/etc/docker/daemon.json ships as /usr/share/docker/daemon.json).
func (p *Plan) sharePath(etcPath string) string {
	rel := strings.TrimPrefix(etcPath, "/etc/")
	rel = strings.TrimPrefix(rel, p.Recipe.Name+"/")
	return "/usr/share/" + p.Recipe.Name + "/" + rel
}
