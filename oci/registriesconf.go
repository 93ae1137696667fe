package oci

import (
	"errors"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strings"
	"syscall"

	"github.com/BurntSushi/toml"

	"github.com/sysext/sysext/internal/inroot"
)

// RegistriesConfFiles are the registry configuration files a node reads,
// in this order, inside its root: the containers ecosystem's
// (containers-registries.conf(5), which podman, CRI-O, skopeo and bootc
// read), then sysext's own, each followed by its drop-in directory of
// *.conf files in lexical order. A [[registry]] table replaces the one
// with the same prefix read before it, so sysext's files override the
// containers ones prefix by prefix.
var RegistriesConfFiles = []string{
	"/etc/containers/registries.conf",
	"/etc/containers/registries.conf.d",
	"/etc/sysext/registries.conf",
	"/etc/sysext/registries.conf.d",
}

// MaxRegistriesConfSize bounds one registries.conf file.
const MaxRegistriesConfSize = 1 << 20

// PullFromMirror says which references a mirror is used for.
type PullFromMirror string

// Values of pull-from-mirror.
const (
	// MirrorAll: tags and digests (the default).
	MirrorAll PullFromMirror = "all"
	// MirrorDigestOnly: never asked what a tag points to; the origin
	// answers that, and the mirror may then serve the content by digest.
	MirrorDigestOnly PullFromMirror = "digest-only"
	// MirrorTagOnly: used when the reference is a tag, not for one pinned
	// by digest.
	MirrorTagOnly PullFromMirror = "tag-only"
)

// Registries is the mirror and remapping configuration of
// containers-registries.conf(5), the subset sysext uses: [[registry]] with
// prefix, location, insecure, blocked, mirror-by-digest-only and
// [[registry.mirror]] (location, insecure, pull-from-mirror). The keys
// for short names and credentials (unqualified-search-registries,
// short-name-mode, [aliases], credential-helpers,
// additional-layer-store-auth-helper) are read and ignored: sysext takes
// only fully qualified references and has its own credential stores.
// Other keys are warned about once.
type Registries struct {
	// Files lists the files read, in order.
	Files   []string
	entries []*RegistryEntry
}

// RegistryEntry is one [[registry]] table.
type RegistryEntry struct {
	// Prefix selects the references the table applies to (the longest
	// matching prefix wins): host[:port][/namespace...][/repo][:tag|@digest],
	// or *.domain for every host under domain.
	Prefix string
	// Location is where references under Prefix are read from (the
	// origin); "" keeps the reference's own registry (a wildcard prefix).
	Location string
	Insecure bool
	Blocked  bool
	Mirrors  []Mirror
	// From is the file (and table) it was read from, for messages.
	From string
}

// Mirror is one [[registry.mirror]].
type Mirror struct {
	Location       string
	Insecure       bool
	PullFromMirror PullFromMirror
}

// The TOML shapes, with the keys read (the rest are reported by the
// decoder as undecoded).
type registriesFile struct {
	Registry []registryTable `toml:"registry"`
}

type registryTable struct {
	Prefix             string        `toml:"prefix"`
	Location           string        `toml:"location"`
	Insecure           bool          `toml:"insecure"`
	Blocked            bool          `toml:"blocked"`
	MirrorByDigestOnly bool          `toml:"mirror-by-digest-only"`
	Mirror             []mirrorTable `toml:"mirror"`
}

type mirrorTable struct {
	Location       string `toml:"location"`
	Insecure       bool   `toml:"insecure"`
	PullFromMirror string `toml:"pull-from-mirror"`
}

// ignoredKeys are valid containers-registries.conf keys sysext has no use
// for: not worth a warning.
var ignoredKeys = map[string]bool{
	"unqualified-search-registries":      true,
	"short-name-mode":                    true,
	"credential-helpers":                 true,
	"additional-layer-store-auth-helper": true,
	"aliases":                            true,
}

// LoadRegistries reads RegistriesConfFiles inside root (see
// internal/inroot: a symlink in the tree never reaches the host). A
// missing file or directory is skipped; nil means none exists. warn is
// told, once each, about keys sysext does not know.
func LoadRegistries(root string, warn func(string)) (*Registries, error) {
	r := &Registries{}
	for _, p := range RegistriesConfFiles {
		rel := strings.TrimPrefix(p, "/")
		if strings.HasSuffix(p, ".d") {
			ents, err := inroot.ReadDir(root, rel)
			if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
				continue
			}
			if err != nil {
				return nil, fmt.Errorf("registry configuration: %w", err)
			}
			var names []string
			for _, e := range ents {
				if strings.HasSuffix(e.Name(), ".conf") && !e.IsDir() {
					names = append(names, e.Name())
				}
			}
			sort.Strings(names)
			for _, n := range names {
				if err := r.load(root, path.Join(rel, n), warn); err != nil {
					return nil, err
				}
			}
			continue
		}
		if err := r.load(root, rel, warn); err != nil {
			return nil, err
		}
	}
	if len(r.Files) == 0 {
		return nil, nil
	}
	return r, nil
}

func (r *Registries) load(root, rel string, warn func(string)) error {
	b, err := inroot.ReadFile(root, rel, MaxRegistriesConfSize)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	name := "/" + rel
	if !inroot.IsHost(root) {
		name = path.Join(root, rel)
	}
	if err != nil {
		return fmt.Errorf("registry configuration %s: %w", name, err)
	}
	return r.Add(name, b, warn)
}

// Add merges one file's configuration (named name in messages) into r: a
// [[registry]] table replaces an earlier one with the same prefix. warn
// (may be nil) is told about unknown keys.
func (r *Registries) Add(name string, b []byte, warn func(string)) error {
	var f registriesFile
	md, err := toml.Decode(string(b), &f)
	if err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			return fmt.Errorf("%s:%d: %s: fix the file or remove it (sysext reads it for registry mirrors, see containers-registries.conf(5))", name, pe.Position.Line, pe.Message)
		}
		return fmt.Errorf("%s: %v: fix the file or remove it (sysext reads it for registry mirrors, see containers-registries.conf(5))", name, err)
	}
	r.Files = append(r.Files, name)
	if warn != nil {
		seen := map[string]bool{}
		for _, k := range md.Undecoded() {
			if len(k) == 0 || ignoredKeys[k[0]] {
				continue
			}
			ks := k.String()
			if k[0] == "registries" {
				ks = "registries" // the version 1 format, as one warning
			}
			if seen[ks] {
				continue
			}
			seen[ks] = true
			if ks == "registries" {
				warn(fmt.Sprintf("%s: the version 1 format ([registries.search], [registries.block], ...) is not read by sysext: write [[registry]] tables", name))
				continue
			}
			warn(fmt.Sprintf("%s: unknown key %q ignored", name, ks))
		}
	}
	prefixes := map[string]bool{}
	for i, t := range f.Registry {
		e, err := t.entry(fmt.Sprintf("%s: [[registry]] #%d", name, i+1))
		if err != nil {
			return err
		}
		if prefixes[e.Prefix] {
			return fmt.Errorf("%s: prefix %q is given twice: merge the two [[registry]] tables", name, e.Prefix)
		}
		prefixes[e.Prefix] = true
		r.put(e)
	}
	return nil
}

// put adds e, replacing an entry with the same prefix.
func (r *Registries) put(e *RegistryEntry) {
	for i, old := range r.entries {
		if old.Prefix == e.Prefix {
			r.entries[i] = e
			return
		}
	}
	r.entries = append(r.entries, e)
}

// Entries returns the [[registry]] tables in effect.
func (r *Registries) Entries() []*RegistryEntry {
	if r == nil {
		return nil
	}
	return r.entries
}

func (t registryTable) entry(where string) (*RegistryEntry, error) {
	e := &RegistryEntry{Prefix: t.Prefix, Location: t.Location, Insecure: t.Insecure, Blocked: t.Blocked}
	if e.Prefix == "" {
		e.Prefix = e.Location
	}
	switch {
	case e.Prefix == "":
		return nil, fmt.Errorf("%s: give a location (and optionally a prefix)", where)
	case strings.HasPrefix(e.Prefix, "*."):
		if err := checkHostPort(e.Prefix[2:]); err != nil || strings.Contains(e.Prefix[2:], "*") {
			return nil, fmt.Errorf("%s: prefix %q: a wildcard prefix is *.domain, with nothing after the domain", where, e.Prefix)
		}
		if e.Location != "" {
			return nil, fmt.Errorf("%s: prefix %q is a wildcard: leave location empty (references keep their own host)", where, e.Prefix)
		}
		e.From = where + " (prefix " + e.Prefix + ")"
	default:
		if err := checkLocation(e.Prefix, true); err != nil {
			return nil, fmt.Errorf("%s: prefix %q: %v", where, e.Prefix, err)
		}
		if e.Location == "" {
			return nil, fmt.Errorf("%s: prefix %q needs a location", where, e.Prefix)
		}
		if err := checkLocation(e.Location, e.Location == e.Prefix); err != nil {
			return nil, fmt.Errorf("%s: location %q: %v", where, e.Location, err)
		}
		if e.Location != e.Prefix && strings.ContainsAny(e.Prefix[strings.IndexByte(e.Prefix+"/", '/'):], ":@") {
			return nil, fmt.Errorf("%s: prefix %q names a tag or digest: such a table can block or add mirrors, not move the location (sysext does not rewrite tags)", where, e.Prefix)
		}
		e.From = where + " (prefix " + e.Prefix + ")"
	}
	for j, m := range t.Mirror {
		mw := fmt.Sprintf("%s mirror #%d", where, j+1)
		if m.Location == "" {
			return nil, fmt.Errorf("%s: give the mirror's location", mw)
		}
		if err := checkLocation(m.Location, false); err != nil {
			return nil, fmt.Errorf("%s: location %q: %v", mw, m.Location, err)
		}
		pfm := PullFromMirror(m.PullFromMirror)
		switch pfm {
		case "":
			pfm = MirrorAll
			if t.MirrorByDigestOnly {
				pfm = MirrorDigestOnly
			}
		case MirrorAll, MirrorDigestOnly, MirrorTagOnly:
			if t.MirrorByDigestOnly && pfm != MirrorDigestOnly {
				return nil, fmt.Errorf("%s: pull-from-mirror = %q contradicts the table's mirror-by-digest-only = true: keep one of them", mw, pfm)
			}
		default:
			return nil, fmt.Errorf("%s: pull-from-mirror = %q: want \"all\", \"digest-only\" or \"tag-only\"", mw, m.PullFromMirror)
		}
		e.Mirrors = append(e.Mirrors, Mirror{Location: m.Location, Insecure: m.Insecure, PullFromMirror: pfm})
	}
	return e, nil
}

// checkLocation checks host[:port][/path] (prefixes may end in :tag or
// @digest): no scheme, a valid host, lowercase path components.
func checkLocation(s string, prefix bool) error {
	if scheme, rest, ok := strings.Cut(s, "://"); ok {
		return fmt.Errorf("drop the scheme %q: write %s", scheme+"://", rest)
	}
	host, repo, _ := strings.Cut(s, "/")
	if err := checkHostPort(host); err != nil {
		return err
	}
	if prefix {
		if i := strings.IndexByte(repo, '@'); i >= 0 {
			repo = repo[:i]
		}
		if i := strings.LastIndexByte(repo, ':'); i >= 0 {
			repo = repo[:i]
		}
	}
	if repo == "" {
		return nil
	}
	if _, err := ParseReference(host + "/" + repo + ":x"); err != nil {
		var re *referenceError
		if errors.As(err, &re) {
			return errors.New(re.msg)
		}
		return err
	}
	return nil
}

// route is where one reference is read from: mirrors in order, then the
// origin.
type route struct {
	entry   *RegistryEntry
	origin  string // host/repository
	mirrors []routeMirror
}

type routeMirror struct {
	Mirror
	repo string // host/repository
}

// find returns the route for ref, or nil when no table's prefix matches.
func (r *Registries) find(ref Reference) (*route, error) {
	if r == nil || ref.IsLayout() {
		return nil, nil
	}
	name := ref.Registry + "/" + ref.Repository
	full := name
	if ref.Tag != "" {
		full += ":" + ref.Tag
	}
	if ref.Digest != "" {
		full += "@" + ref.Digest.String()
	}
	var best *RegistryEntry
	bestLen, bestRest := -1, ""
	for _, e := range r.entries {
		n, rest := matchPrefix(e.Prefix, ref, name, full)
		if n > bestLen || (n == bestLen && best != nil && strings.HasPrefix(best.Prefix, "*.") && !strings.HasPrefix(e.Prefix, "*.")) {
			best, bestLen, bestRest = e, n, rest
		}
	}
	if best == nil || bestLen < 0 {
		return nil, nil
	}
	rt := &route{entry: best, origin: name}
	if best.Location != "" && best.Location != best.Prefix {
		rt.origin = best.Location + bestRest
	}
	for _, m := range best.Mirrors {
		rt.mirrors = append(rt.mirrors, routeMirror{Mirror: m, repo: m.Location + bestRest})
	}
	return rt, nil
}

// matchPrefix returns how long a match prefix is for ref (-1: none) and
// the rest of the repository name after it ("/app" for prefix
// "host/ns" and "host/ns/app"), which locations get appended.
func matchPrefix(prefix string, ref Reference, name, full string) (int, string) {
	if dom, ok := strings.CutPrefix(prefix, "*."); ok {
		if strings.HasSuffix(ref.Registry, "."+dom) {
			return len(prefix), "/" + ref.Repository
		}
		return -1, ""
	}
	if !strings.HasPrefix(full, prefix) {
		return -1, ""
	}
	if len(full) > len(prefix) {
		// The prefix must end at a component: host only before '/', a
		// repository before '/', ':' (tag) or '@' (digest).
		c := full[len(prefix)]
		switch {
		case c == '/':
		case (c == ':' || c == '@') && strings.Contains(prefix, "/"):
		default:
			return -1, ""
		}
	}
	rest := ""
	if len(name) > len(prefix) {
		rest = name[len(prefix):]
	}
	return len(prefix), rest
}
