package recipe

import (
	"bytes"
	"errors"
	"fmt"
	"path"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/sysext/sysext/extension"
	"go.yaml.in/yaml/v3"
)

// Recipe is one parsed, validated recipe file. Field comments give the YAML
// keys; docs/recipes.md documents them with a complete example.
type Recipe struct {
	Name        string              `yaml:"name"`        // the extension's name
	Description string              `yaml:"description"` // one line
	Upstream    string              `yaml:"upstream"`    // the project's home page
	Version     VersionSpec         `yaml:"version"`
	Arches      map[string]ArchVars `yaml:"arches"` // systemd arch -> its template variables
	Options     []Option            `yaml:"options,omitempty"`
	Downloads   []Download          `yaml:"downloads"`
	Files       []File              `yaml:"files,omitempty"`
	Symlinks    []Symlink           `yaml:"symlinks,omitempty"`
	Units       []Unit              `yaml:"units,omitempty"`
	Dropins     []Dropin            `yaml:"dropins,omitempty"`
	Tmpfiles    []string            `yaml:"tmpfiles,omitempty"` // tmpfiles.d(5) lines
	Configs     []Config            `yaml:"configs,omitempty"`
	Notes       string              `yaml:"notes,omitempty"` // shown by `recipes show`

	source string // file name or "catalog:NAME.yaml"
	raw    []byte
	root   *yaml.Node
}

// ArchVars are template variables that hold per architecture (e.g. the
// upstream's own spelling of it).
type ArchVars map[string]string

// VersionSpec says what the recipe's versions look like.
type VersionSpec struct {
	Pattern string `yaml:"pattern"` // a Go regexp matched against the whole version
	Example string `yaml:"example"` // a version known to exist upstream
}

// Option is a knob set with --option NAME=VALUE; its value is a template
// variable and can select what is installed (when:).
type Option struct {
	Name        string   `yaml:"name"`
	Description string   `yaml:"description"`
	Default     string   `yaml:"default"`
	Values      []string `yaml:"values,omitempty"`  // the allowed values ("" always allowed when it is the default)
	Pattern     string   `yaml:"pattern,omitempty"` // or a regexp the value must match whole
}

// Download is one file fetched from upstream.
type Download struct {
	ID       string                       `yaml:"id"`
	URL      string                       `yaml:"url"`
	Format   string                       `yaml:"format,omitempty"` // tar.gz, tar.xz, tar.zst, tar, zip, file; default from the URL
	Checksum *ChecksumFile                `yaml:"checksum,omitempty"`
	SHA256   map[string]map[string]string `yaml:"sha256,omitempty"` // version -> arch -> hex, pinned
	When     string                       `yaml:"when,omitempty"`
}

// ChecksumFile is an upstream's published checksum file: one hex digest, or
// sha256sum(1) lines ("HEX  NAME"), or BSD lines ("SHA256 (NAME) = HEX").
type ChecksumFile struct {
	URL   string `yaml:"url"`             // template; ${url} is the download's URL
	Entry string `yaml:"entry,omitempty"` // the NAME to pick; default the download's file name
}

// File places files from a download (or inline content) under /usr.
type File struct {
	Download string `yaml:"download,omitempty"` // a download ID; default the only download
	From     string `yaml:"from,omitempty"`     // archive path or glob; "DIR/" takes the whole directory
	To       string `yaml:"to"`                 // absolute under /usr; ending in "/" = into that directory
	Mode     string `yaml:"mode,omitempty"`     // octal; default the archive's, 0755 for plain downloads
	Content  string `yaml:"content,omitempty"`  // inline content instead of a download
	When     string `yaml:"when,omitempty"`
}

// Symlink is a link placed under /usr.
type Symlink struct {
	Path   string `yaml:"path"`
	Target string `yaml:"target"`
	When   string `yaml:"when,omitempty"`
}

// Unit is a systemd unit shipped in /usr/lib/systemd/system.
type Unit struct {
	Name    string `yaml:"name"`
	Content string `yaml:"content"`
	Enable  bool   `yaml:"enable,omitempty"` // upheld by its target when merged
	When    string `yaml:"when,omitempty"`
}

// Dropin is a drop-in for a unit (ours or the OS's).
type Dropin struct {
	Unit    string `yaml:"unit"`
	Name    string `yaml:"name"`
	Content string `yaml:"content"`
	When    string `yaml:"when,omitempty"`
}

// Config is a default configuration file: shipped under /usr/share/NAME/ and
// copied to its place under /etc by a tmpfiles.d C line (only when absent,
// so a user's own file always wins).
type Config struct {
	Path     string `yaml:"path"` // where it belongs, under /etc
	Content  string `yaml:"content,omitempty"`
	Download string `yaml:"download,omitempty"`
	From     string `yaml:"from,omitempty"`
	Mode     string `yaml:"mode,omitempty"`
	When     string `yaml:"when,omitempty"`
}

// Source is where the recipe was read from.
func (r *Recipe) Source() string { return r.source }

// Raw is the recipe file as it was read.
func (r *Recipe) Raw() []byte { return r.raw }

// ArchList is the architectures the recipe offers, sorted.
func (r *Recipe) ArchList() []extension.Arch {
	out := make([]extension.Arch, 0, len(r.Arches))
	for a := range r.Arches {
		out = append(out, extension.Arch(a))
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// Error is a problem in a recipe file, located by line where the file
// tells it.
type Error struct {
	Source string
	Line   int    // 0 when unknown
	Field  string // e.g. files[2].to; "" for syntax errors
	Msg    string
}

func (e *Error) Error() string {
	loc := e.Source
	if e.Line > 0 {
		loc = fmt.Sprintf("%s:%d", e.Source, e.Line)
	}
	if e.Field != "" {
		return fmt.Sprintf("%s: %s: %s", loc, e.Field, e.Msg)
	}
	return fmt.Sprintf("%s: %s", loc, e.Msg)
}

// MaxRecipeSize bounds a recipe file; real ones are a few KiB.
const MaxRecipeSize = 1 << 20

// parserProblems are yaml.v3's parser error messages (as opposed to its
// scanner's), whose line numbers it reports from 0.
var parserProblems = map[string]bool{
	"did not find expected ',' or ']'":       true,
	"did not find expected ',' or '}'":       true,
	"did not find expected key":              true,
	"did not find expected node content":     true,
	"did not find expected '-' indicator":    true,
	"did not find expected <document start>": true,
	"found undefined tag handle":             true,
	"found incompatible YAML document":       true,
}

var yamlLine = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^(?:yaml: )?line (\d+): (.*)$`) })

// Parse reads and validates one recipe. source names it in errors.
func Parse(data []byte, source string) (*Recipe, error) {
	if len(data) > MaxRecipeSize {
		return nil, &Error{Source: source, Msg: fmt.Sprintf("recipe is %d bytes, more than the %d allowed", len(data), MaxRecipeSize)}
	}
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, yamlError(source, err)
	}
	if root.Kind != yaml.DocumentNode || len(root.Content) == 0 || root.Content[0].Kind != yaml.MappingNode {
		return nil, &Error{Source: source, Line: 1, Msg: "a recipe is a YAML mapping (name:, version:, arches:, downloads:, ...)"}
	}
	r := &Recipe{}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(r); err != nil {
		return nil, yamlError(source, err)
	}
	r.source, r.raw, r.root = source, data, &root
	if err := r.validate(); err != nil {
		return nil, err
	}
	return r, nil
}

func yamlError(source string, err error) error {
	msg := err.Error()
	var te *yaml.TypeError
	if errors.As(err, &te) && len(te.Errors) > 0 {
		msg = te.Errors[0]
	}
	if m := yamlLine().FindStringSubmatch(msg); m != nil {
		n, _ := strconv.Atoi(m[1])
		if parserProblems[m[2]] {
			// yaml.v3 counts lines from 0 for parser (not scanner) errors.
			n++
		}
		return &Error{Source: source, Line: n, Msg: m[2]}
	}
	return &Error{Source: source, Msg: strings.TrimPrefix(msg, "yaml: ")}
}

// lineOf finds the line of the node at keys (map keys and sequence
// indexes) in the recipe file, or of the deepest node that exists.
func (r *Recipe) lineOf(keys ...any) int {
	if r.root == nil || len(r.root.Content) == 0 {
		return 0
	}
	n := r.root.Content[0]
	line := n.Line
	for _, k := range keys {
		var next *yaml.Node
		keyLine := 0
		switch k := k.(type) {
		case string:
			if n.Kind == yaml.MappingNode {
				for i := 0; i+1 < len(n.Content); i += 2 {
					if n.Content[i].Value == k {
						next, keyLine = n.Content[i+1], n.Content[i].Line
						break
					}
				}
			}
		case int:
			if n.Kind == yaml.SequenceNode && k < len(n.Content) {
				next = n.Content[k]
			}
		}
		if next == nil {
			return line
		}
		n, line = next, next.Line
		if next.Kind == yaml.ScalarNode && keyLine > 0 {
			// Point at the key: a block scalar's own line is where its
			// text starts.
			line = keyLine
		}
	}
	return line
}

// errAt builds a located validation error; keys lead to the field.
func (r *Recipe) errAt(msg string, keys ...any) error {
	var field strings.Builder
	for _, k := range keys {
		switch k := k.(type) {
		case string:
			if field.Len() > 0 {
				field.WriteByte('.')
			}
			field.WriteString(k)
		case int:
			fmt.Fprintf(&field, "[%d]", k)
		}
	}
	return &Error{Source: r.source, Line: r.lineOf(keys...), Field: field.String(), Msg: msg}
}

// builtinVars are always defined in templates.
var builtinVars = []string{"version", "bare_version", "arch", "goarch", "uname"}

var (
	varName = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^[a-z][a-z0-9_-]*$`) })
	idName  = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^[a-z0-9][a-z0-9._-]*$`) })
	hexSum  = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^[0-9a-f]{64}$`) })
)

// Formats a download can have.
var formats = []string{"tar.gz", "tar.xz", "tar.zst", "tar", "zip", "file"}

// FormatOf returns a download's format: the declared one or the one its URL's
// suffix says.
func FormatOf(d Download, url string) string {
	if d.Format != "" {
		return d.Format
	}
	u := strings.ToLower(url)
	if i := strings.IndexAny(u, "?#"); i >= 0 {
		u = u[:i]
	}
	switch {
	case strings.HasSuffix(u, ".tar.gz"), strings.HasSuffix(u, ".tgz"):
		return "tar.gz"
	case strings.HasSuffix(u, ".tar.xz"), strings.HasSuffix(u, ".txz"):
		return "tar.xz"
	case strings.HasSuffix(u, ".tar.zst"), strings.HasSuffix(u, ".tzst"):
		return "tar.zst"
	case strings.HasSuffix(u, ".tar"):
		return "tar"
	case strings.HasSuffix(u, ".zip"):
		return "zip"
	}
	return "file"
}

// validate checks a recipe as it was read; an error names the field (its
// line) and what to write.
func (r *Recipe) validate() error {
	if err := r.validateAbout(); err != nil {
		return err
	}
	known, err := r.validateVariables()
	if err != nil {
		return err
	}
	ids, err := r.validateDownloads(known)
	if err != nil {
		return err
	}
	if err := r.validateFiles(known, ids); err != nil {
		return err
	}
	if err := r.validateSymlinks(); err != nil {
		return err
	}
	if err := r.validateSystemdLines(); err != nil {
		return err
	}
	return r.validateConfigs(known, ids)
}

// validateAbout checks the recipe's name, description, upstream and
// version pattern.
func (r *Recipe) validateAbout() error {
	if err := extension.ValidateName(r.Name); err != nil {
		return r.errAt(err.Error(), "name")
	}
	if strings.TrimSpace(r.Description) == "" {
		return r.errAt("is empty: say in one line what the extension ships", "description")
	}
	if !strings.HasPrefix(r.Upstream, "https://") && !strings.HasPrefix(r.Upstream, "http://") {
		return r.errAt(fmt.Sprintf("%q is not a URL: name the project's home page", r.Upstream), "upstream")
	}
	if r.Version.Pattern == "" {
		return r.errAt("is missing: give a regexp for the upstream's version numbers", "version", "pattern")
	}
	if _, err := regexp.Compile(r.Version.Pattern); err != nil {
		return r.errAt(fmt.Sprintf("not a valid regexp: %v", err), "version", "pattern")
	}
	if r.Version.Example != "" && !r.versionRe().MatchString(r.Version.Example) {
		return r.errAt(fmt.Sprintf("%q does not match the pattern '%s'", r.Version.Example, r.Version.Pattern), "version", "example")
	}
	return nil
}

// validateVariables checks the architectures' variables and the options,
// and returns every name a template may use, with what defines it.
func (r *Recipe) validateVariables() (map[string]string, error) {
	if len(r.Arches) == 0 {
		return nil, r.errAt("no architectures: list the ones upstream publishes (x86-64:, arm64:)", "arches")
	}
	known := map[string]string{}
	for _, v := range builtinVars {
		known[v] = "built in"
	}
	var archKeys []string
	for a, vars := range r.Arches {
		arch := extension.Arch(a)
		if !arch.Valid() || arch == extension.AnyArch {
			msg := fmt.Sprintf("%q is not an architecture in systemd's naming", a)
			if p, err := extension.ParseArch(a); err == nil {
				msg += fmt.Sprintf(": write %s", p)
			}
			return nil, r.errAt(msg, "arches", a)
		}
		keys := sortedKeys(vars)
		if archKeys == nil {
			archKeys = keys
		} else if strings.Join(keys, ",") != strings.Join(archKeys, ",") {
			return nil, r.errAt(fmt.Sprintf("defines %v but another architecture defines %v: every architecture needs the same variables", keys, archKeys), "arches", a)
		}
		for _, k := range keys {
			if !varName().MatchString(k) {
				return nil, r.errAt(fmt.Sprintf("variable name %q: use lower-case letters, digits, '_' and '-'", k), "arches", a)
			}
			if known[k] == "built in" {
				return nil, r.errAt(fmt.Sprintf("variable %q is built in and cannot be redefined", k), "arches", a)
			}
			known[k] = "arch"
		}
	}
	for i, o := range r.Options {
		if !varName().MatchString(o.Name) {
			return nil, r.errAt(fmt.Sprintf("option name %q: use lower-case letters, digits, '_' and '-'", o.Name), "options", i, "name")
		}
		if _, dup := known[o.Name]; dup {
			return nil, r.errAt(fmt.Sprintf("option %q is already defined (%s)", o.Name, known[o.Name]), "options", i, "name")
		}
		known[o.Name] = "option"
		if o.Pattern != "" {
			if _, err := regexp.Compile(o.Pattern); err != nil {
				return nil, r.errAt(fmt.Sprintf("not a valid regexp: %v", err), "options", i, "pattern")
			}
		}
		if o.Default != "" {
			if err := o.check(o.Default); err != nil {
				return nil, r.errAt(err.Error(), "options", i, "default")
			}
		}
	}
	return known, nil
}

// validateDownloads checks each download (id, URL template, format,
// checksum source, pinned sums) and returns them by id.
func (r *Recipe) validateDownloads(known map[string]string) (map[string]Download, error) {
	if len(r.Downloads) == 0 {
		return nil, r.errAt("no downloads: a recipe fetches at least one upstream file", "downloads")
	}
	ids := map[string]Download{}
	for i, d := range r.Downloads {
		if !idName().MatchString(d.ID) {
			return nil, r.errAt(fmt.Sprintf("id %q: use lower-case letters, digits, '.', '_' and '-'", d.ID), "downloads", i, "id")
		}
		if _, dup := ids[d.ID]; dup {
			return nil, r.errAt(fmt.Sprintf("id %q is used twice", d.ID), "downloads", i, "id")
		}
		ids[d.ID] = d
		if !strings.HasPrefix(d.URL, "https://") && !strings.HasPrefix(d.URL, "http://") {
			return nil, r.errAt(fmt.Sprintf("%q: downloads are http(s) URLs", d.URL), "downloads", i, "url")
		}
		if err := checkVars(d.URL, known, nil); err != nil {
			return nil, r.errAt(err.Error(), "downloads", i, "url")
		}
		if d.Format != "" && !slices.Contains(formats, d.Format) {
			return nil, r.errAt(fmt.Sprintf("unknown format %q: use one of %s", d.Format, strings.Join(formats, ", ")), "downloads", i, "format")
		}
		if d.Checksum != nil {
			if d.Checksum.URL == "" {
				return nil, r.errAt("checksum file without url", "downloads", i, "checksum")
			}
			if err := checkVars(d.Checksum.URL, known, []string{"url", "file"}); err != nil {
				return nil, r.errAt(err.Error(), "downloads", i, "checksum", "url")
			}
			if err := checkVars(d.Checksum.Entry, known, []string{"file"}); err != nil {
				return nil, r.errAt(err.Error(), "downloads", i, "checksum", "entry")
			}
		}
		for v, arches := range d.SHA256 {
			for a, sum := range arches {
				if _, ok := r.Arches[a]; !ok {
					return nil, r.errAt(fmt.Sprintf("version %s: %q is not one of the recipe's architectures", v, a), "downloads", i, "sha256", v)
				}
				if !hexSum().MatchString(sum) {
					return nil, r.errAt(fmt.Sprintf("version %s, %s: %q is not a sha256 (64 lower-case hex digits)", v, a, sum), "downloads", i, "sha256", v)
				}
			}
		}
		if err := r.checkWhen(d.When); err != nil {
			return nil, r.errAt(err.Error(), "downloads", i, "when")
		}
	}
	return ids, nil
}

// downloadOf is the download a file or config takes from: the one named,
// or the only one.
func (r *Recipe) downloadOf(ids map[string]Download, id string, keys ...any) (Download, error) {
	if id == "" {
		if len(r.Downloads) == 1 {
			return r.Downloads[0], nil
		}
		return Download{}, r.errAt("several downloads: say which one (download: ID)", keys...)
	}
	d, ok := ids[id]
	if !ok {
		return Download{}, r.errAt(fmt.Sprintf("no download has id %q", id), keys...)
	}
	return d, nil
}

// validateFiles checks what goes under /usr: each file's destination,
// mode, and source (inline, or a path in a download).
func (r *Recipe) validateFiles(known map[string]string, ids map[string]Download) error {
	for i, f := range r.Files {
		if err := checkUsrPath(f.To, true); err != nil {
			return r.errAt(err.Error(), "files", i, "to")
		}
		if err := checkMode(f.Mode); err != nil {
			return r.errAt(err.Error(), "files", i, "mode")
		}
		if err := r.checkWhen(f.When); err != nil {
			return r.errAt(err.Error(), "files", i, "when")
		}
		if f.Content != "" {
			if f.From != "" || f.Download != "" || strings.HasSuffix(f.To, "/") {
				return r.errAt("inline content goes to one file: drop from:/download: and give the full path in to:", "files", i)
			}
			continue
		}
		d, err := r.downloadOf(ids, f.Download, "files", i)
		if err != nil {
			return err
		}
		if err := checkFrom(f.From, FormatOf(d, d.URL), known); err != nil {
			return r.errAt(err.Error(), "files", i, "from")
		}
		if strings.HasSuffix(f.From, "/") && !strings.HasSuffix(f.To, "/") {
			return r.errAt("a directory (from: ending in '/') goes into a directory: end to: with '/'", "files", i, "to")
		}
	}
	return nil
}

func (r *Recipe) validateSymlinks() error {
	for i, s := range r.Symlinks {
		if err := checkUsrPath(s.Path, false); err != nil {
			return r.errAt(err.Error(), "symlinks", i, "path")
		}
		if s.Target == "" {
			return r.errAt("is empty", "symlinks", i, "target")
		}
		if err := r.checkWhen(s.When); err != nil {
			return r.errAt(err.Error(), "symlinks", i, "when")
		}
	}
	return nil
}

// validateSystemdLines checks units, drop-ins and tmpfiles.d lines: fields
// that become lines of systemd files go through extension's one set of
// rules.
func (r *Recipe) validateSystemdLines() error {
	for i, u := range r.Units {
		if err := extension.ValidateUnitName(u.Name); err != nil {
			return r.errAt(err.Error(), "units", i, "name")
		}
		if strings.TrimSpace(u.Content) == "" {
			return r.errAt("is empty", "units", i, "content")
		}
		if err := r.checkWhen(u.When); err != nil {
			return r.errAt(err.Error(), "units", i, "when")
		}
	}
	for i, d := range r.Dropins {
		if err := extension.ValidateUnitName(d.Unit); err != nil {
			return r.errAt(err.Error(), "dropins", i, "unit")
		}
		if !strings.HasSuffix(d.Name, ".conf") || strings.Contains(d.Name, "/") || strings.HasPrefix(d.Name, ".") {
			return r.errAt(fmt.Sprintf("%q: a drop-in is a file name ending in .conf", d.Name), "dropins", i, "name")
		}
		if err := extension.ValidateLineWord("drop-in name", d.Name); err != nil {
			return r.errAt(err.Error(), "dropins", i, "name")
		}
		if err := r.checkWhen(d.When); err != nil {
			return r.errAt(err.Error(), "dropins", i, "when")
		}
	}
	for i, l := range r.Tmpfiles {
		if err := extension.ValidateLineValue("tmpfiles.d line", l); err != nil {
			return r.errAt(err.Error(), "tmpfiles", i)
		}
		if f := strings.Fields(l); len(f) < 2 {
			return r.errAt(fmt.Sprintf("%q is not a tmpfiles.d line (TYPE PATH [MODE USER GROUP AGE ARGUMENT])", l), "tmpfiles", i)
		}
	}
	return nil
}

// validateConfigs checks the default configs shipped for /etc.
func (r *Recipe) validateConfigs(known map[string]string, ids map[string]Download) error {
	for i, c := range r.Configs {
		// configs[].path becomes the PATH (and, under /usr/share, the
		// ARGUMENT) of a tmpfiles.d C line.
		if err := extension.ValidateLinePath("default config path", c.Path); err != nil {
			return r.errAt(err.Error(), "configs", i, "path")
		}
		p := path.Clean(c.Path)
		if !strings.HasPrefix(c.Path, "/etc/") || p != c.Path {
			return r.errAt(fmt.Sprintf("%q: a default config belongs under /etc/ (it ships under /usr/share/%s/)", c.Path, r.Name), "configs", i, "path")
		}
		if err := checkMode(c.Mode); err != nil {
			return r.errAt(err.Error(), "configs", i, "mode")
		}
		if err := r.checkWhen(c.When); err != nil {
			return r.errAt(err.Error(), "configs", i, "when")
		}
		if c.Content != "" {
			if c.From != "" || c.Download != "" {
				return r.errAt("give content: or from:, not both", "configs", i)
			}
			continue
		}
		d, err := r.downloadOf(ids, c.Download, "configs", i)
		if err != nil {
			return err
		}
		if err := checkFrom(c.From, FormatOf(d, d.URL), known); err != nil {
			return r.errAt(err.Error(), "configs", i, "from")
		}
		if strings.HasSuffix(c.From, "/") || strings.ContainsAny(c.From, "*?[") {
			return r.errAt("a config comes from one archive path, not a directory or glob", "configs", i, "from")
		}
	}
	return nil
}

func (r *Recipe) versionRe() *regexp.Regexp {
	return regexp.MustCompile(`^(?:` + r.Version.Pattern + `)$`)
}

func (o Option) check(v string) error {
	if len(o.Values) > 0 && !slices.Contains(o.Values, v) && !(v == "" && o.Default == "") {
		return fmt.Errorf("option %s=%q: use one of %s", o.Name, v, strings.Join(o.Values, ", "))
	}
	if o.Pattern != "" && !regexp.MustCompile(`^(?:`+o.Pattern+`)$`).MatchString(v) {
		return fmt.Errorf("option %s=%q does not match %q", o.Name, v, o.Pattern)
	}
	if strings.ContainsAny(v, "/\\ \t\n") || strings.Contains(v, "..") {
		return fmt.Errorf("option %s=%q: values may not contain '/', '..' or whitespace", o.Name, v)
	}
	return nil
}

// when is a parsed condition "OPTION == VALUE" or "OPTION != VALUE".
type when struct {
	option, value string
	equal         bool
}

func parseWhen(s string) (when, bool) {
	if a, b, ok := strings.Cut(s, "!="); ok {
		return when{strings.TrimSpace(a), strings.TrimSpace(b), false}, true
	}
	if a, b, ok := strings.Cut(s, "=="); ok {
		return when{strings.TrimSpace(a), strings.TrimSpace(b), true}, true
	}
	return when{}, false
}

func (r *Recipe) option(name string) (Option, bool) {
	for _, o := range r.Options {
		if o.Name == name {
			return o, true
		}
	}
	return Option{}, false
}

func (r *Recipe) checkWhen(s string) error {
	if s == "" {
		return nil
	}
	w, ok := parseWhen(s)
	if !ok {
		return fmt.Errorf("%q: write OPTION == VALUE or OPTION != VALUE", s)
	}
	o, ok := r.option(w.option)
	if !ok {
		return fmt.Errorf("%q: no option %q is declared", s, w.option)
	}
	if len(o.Values) > 0 && w.value != "" && !slices.Contains(o.Values, w.value) {
		return fmt.Errorf("%q: %q is not one of option %s's values (%s)", s, w.value, o.Name, strings.Join(o.Values, ", "))
	}
	return nil
}

// checkUsrPath accepts a clean absolute path under /usr; dir allows a
// trailing '/'.
func checkUsrPath(p string, dir bool) error {
	q := p
	if dir {
		q = strings.TrimSuffix(p, "/")
	}
	if q == "" {
		return errors.New("is empty: give an absolute path under /usr")
	}
	if path.Clean(q) != q || !strings.HasPrefix(q, "/usr/") {
		return fmt.Errorf("%q leaves /usr: an extension only ships files under /usr (defaults for /etc go in configs:)", p)
	}
	if q == "/usr/sbin" || strings.HasPrefix(q, "/usr/sbin/") {
		return fmt.Errorf("%q: use /usr/bin, /usr/sbin is a link to it on Flatcar and Fedora", p)
	}
	return nil
}

func checkMode(m string) error {
	if m == "" {
		return nil
	}
	v, err := strconv.ParseUint(m, 8, 32)
	if err != nil || v > 0o7777 {
		return fmt.Errorf("%q is not an octal file mode like 0755", m)
	}
	return nil
}

func parseMode(m string, def uint32) uint32 {
	if m == "" {
		return def
	}
	v, _ := strconv.ParseUint(m, 8, 32)
	return uint32(v)
}

func checkFrom(from, format string, known map[string]string) error {
	if format == "file" {
		if from != "" {
			return errors.New("the download is a plain file: drop from:")
		}
		return nil
	}
	if from == "" {
		return errors.New("is empty: name the path (or glob) inside the archive")
	}
	if strings.HasPrefix(from, "/") || strings.Contains("/"+from+"/", "/../") {
		return fmt.Errorf("%q: archive paths are relative and stay inside the archive", from)
	}
	if err := checkVars(from, known, nil); err != nil {
		return err
	}
	if _, err := path.Match(strings.TrimSuffix(from, "/"), ""); err != nil {
		return fmt.Errorf("%q is not a valid glob: %v", from, err)
	}
	return nil
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
