package oci

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func mustRef(t *testing.T, s string) Reference {
	t.Helper()
	r, err := ParseReference(s)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func parseConf(t *testing.T, conf string) *Registries {
	t.Helper()
	r := &Registries{}
	if err := r.Add("test.conf", []byte(conf), nil); err != nil {
		t.Fatal(err)
	}
	return r
}

func TestRegistriesRoutes(t *testing.T) {
	r := parseConf(t, `
unqualified-search-registries = ["docker.io"]
short-name-mode = "enforcing"

[[registry]]
prefix = "example.com/foo"
location = "internal.example.net/bar"
[[registry.mirror]]
location = "mirror-0.local/mirror-for-foo"
[[registry.mirror]]
location = "mirror-1.local:5000/mirrors/foo"
insecure = true
pull-from-mirror = "digest-only"

[[registry]]
location = "example.com"
[[registry.mirror]]
location = "site.local/example"

[[registry]]
prefix = "*.corp.example"
[[registry.mirror]]
location = "cache.corp.example:5000/by-host"
pull-from-mirror = "tag-only"

[[registry]]
prefix = "ghcr.io/acme/ext/docker:24"
location = "ghcr.io/acme/ext/docker:24"
blocked = true

[aliases]
"fedora" = "registry.fedoraproject.org/fedora"
`)
	for _, c := range []struct {
		ref, origin string
		mirrors     []string
		blocked     bool
	}{
		// The longest prefix wins; the rest of the name is appended to
		// the location and to each mirror.
		{"example.com/foo/myimage:latest", "internal.example.net/bar/myimage", []string{"mirror-0.local/mirror-for-foo/myimage", "mirror-1.local:5000/mirrors/foo/myimage"}, false},
		{"example.com/foo:1", "internal.example.net/bar", []string{"mirror-0.local/mirror-for-foo", "mirror-1.local:5000/mirrors/foo"}, false},
		// "example.com/foobar" does not continue "example.com/foo" at a
		// component boundary.
		{"example.com/foobar/x:1", "example.com/foobar/x", []string{"site.local/example/foobar/x"}, false},
		{"a.corp.example/team/ext:2", "a.corp.example/team/ext", []string{"cache.corp.example:5000/by-host/team/ext"}, false},
		{"ghcr.io/acme/ext/docker:24", "ghcr.io/acme/ext/docker", nil, true},
		{"ghcr.io/acme/ext/docker:25", "", nil, false},
		// A host prefix does not match another port of the same host.
		{"example.com:5000/foo/x:1", "", nil, false},
		{"corp.example/x:1", "", nil, false},
	} {
		rt, err := r.find(mustRef(t, c.ref))
		if err != nil {
			t.Fatal(err)
		}
		if c.origin == "" {
			if rt != nil {
				t.Errorf("%s: matched %s", c.ref, rt.entry.Prefix)
			}
			continue
		}
		if rt == nil {
			t.Errorf("%s: no match", c.ref)
			continue
		}
		var ms []string
		for _, m := range rt.mirrors {
			ms = append(ms, m.repo)
		}
		if rt.origin != c.origin || strings.Join(ms, " ") != strings.Join(c.mirrors, " ") || rt.entry.Blocked != c.blocked {
			t.Errorf("%s: origin %s mirrors %v blocked %v; want %s %v %v", c.ref, rt.origin, ms, rt.entry.Blocked, c.origin, c.mirrors, c.blocked)
		}
	}
	rt, _ := r.find(mustRef(t, "example.com/foo/x:1"))
	if rt.mirrors[0].PullFromMirror != MirrorAll || rt.mirrors[1].PullFromMirror != MirrorDigestOnly || !rt.mirrors[1].Insecure {
		t.Errorf("mirror settings %+v", rt.mirrors)
	}
}

func TestRegistriesConfErrors(t *testing.T) {
	for conf, want := range map[string]string{
		"[[registry]]\nlocation = \"a.example\"\ninsecure = yes\n":                                                           "test.conf:3:",
		"[[registry]]\nprefix = \"a.example\"\n":                                                                             "needs a location",
		"[[registry]]\ninsecure = true\n":                                                                                    "give a location",
		"[[registry]]\nlocation = \"https://a.example\"\n":                                                                   "drop the scheme",
		"[[registry]]\nlocation = \"a.example/Foo\"\n":                                                                       "lowercase",
		"[[registry]]\nlocation = \"a.example\"\n[[registry.mirror]]\ninsecure = true\n":                                     "give the mirror's location",
		"[[registry]]\nlocation = \"a.example\"\n[[registry.mirror]]\nlocation = \"m.example\"\npull-from-mirror = \"some\"": `want "all", "digest-only" or "tag-only"`,
		"[[registry]]\nlocation = \"a.example\"\nmirror-by-digest-only = true\n[[registry.mirror]]\nlocation = \"m.example\"\npull-from-mirror = \"all\"": "contradicts",
		"[[registry]]\nlocation = \"a.example\"\n[[registry]]\nlocation = \"a.example\"\n":                                                                "given twice",
		"[[registry]]\nprefix = \"*.a.example\"\nlocation = \"b.example\"\n":                                                                              "leave location empty",
		"[[registry]]\nprefix = \"a.example/x:1\"\nlocation = \"b.example/y\"\n":                                                                          "names a tag or digest",
	} {
		err := (&Registries{}).Add("test.conf", []byte(conf), nil)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: got %v, want %q", conf, err, want)
		}
	}
	// mirror-by-digest-only makes the table's mirrors digest-only.
	r := parseConf(t, "[[registry]]\nlocation = \"a.example\"\nmirror-by-digest-only = true\n[[registry.mirror]]\nlocation = \"m.example\"\n")
	if m := r.entries[0].Mirrors[0]; m.PullFromMirror != MirrorDigestOnly {
		t.Errorf("mirror-by-digest-only: %+v", m)
	}
}

func TestRegistriesConfUnknownKeysWarnOnce(t *testing.T) {
	var warned []string
	warn := func(s string) { warned = append(warned, s) }
	conf := `
credential-helpers = ["containers-auth.json"]
colour = "blue"
[[registry]]
location = "a.example"
pull-policy = "always"
[[registry.mirror]]
location = "m.example"
speed = 3
[[registry]]
location = "b.example"
pull-policy = "never"
[registries.search]
registries = ["docker.io"]
[registries.block]
registries = ["evil.example"]
`
	if err := (&Registries{}).Add("x.conf", []byte(conf), warn); err != nil {
		t.Fatal(err)
	}
	want := []string{
		`x.conf: unknown key "colour" ignored`,
		`x.conf: unknown key "registry.pull-policy" ignored`,
		`x.conf: unknown key "registry.mirror.speed" ignored`,
		"x.conf: the version 1 format ([registries.search], [registries.block], ...) is not read by sysext: write [[registry]] tables",
	}
	if strings.Join(warned, "\n") != strings.Join(want, "\n") {
		t.Errorf("warnings:\n%s\nwant:\n%s", strings.Join(warned, "\n"), strings.Join(want, "\n"))
	}
}

// The files are read inside the root, in order: containers', its drop-ins,
// sysext's, its drop-ins; a later table replaces the one with the same
// prefix.
func TestLoadRegistriesPrecedence(t *testing.T) {
	root := t.TempDir()
	write := func(p, s string) {
		full := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	table := func(loc, mirror string) string {
		return "[[registry]]\nlocation = \"" + loc + "\"\n[[registry.mirror]]\nlocation = \"" + mirror + "\"\n"
	}
	write("etc/containers/registries.conf", table("a.example", "containers-main")+table("b.example", "containers-main")+table("c.example", "containers-main")+table("d.example", "containers-main"))
	write("etc/containers/registries.conf.d/10-b.conf", table("b.example", "containers-dropin-10"))
	write("etc/containers/registries.conf.d/20-b.conf", table("b.example", "containers-dropin-20")+table("c.example", "containers-dropin-20"))
	write("etc/containers/registries.conf.d/ignored.txt", "not toml [")
	write("etc/sysext/registries.conf", table("c.example", "sysext-main")+table("d.example", "sysext-main"))
	write("etc/sysext/registries.conf.d/50-d.conf", table("d.example", "sysext-dropin"))
	// The host's files are never read: an absolute symlink in the tree
	// resolves inside it.
	write("elsewhere/registries.conf", table("e.example", "inside-root"))
	if err := os.Symlink("/elsewhere/registries.conf", filepath.Join(root, "etc/sysext/registries.conf.d/60-link.conf")); err != nil {
		t.Fatal(err)
	}
	r, err := LoadRegistries(root, nil)
	if err != nil {
		t.Fatal(err)
	}
	for host, want := range map[string]string{
		"a.example": "containers-main",
		"b.example": "containers-dropin-20",
		"c.example": "sysext-main",
		"d.example": "sysext-dropin",
		"e.example": "inside-root",
	} {
		rt, _ := r.find(mustRef(t, host+"/x:1"))
		if rt == nil || rt.mirrors[0].Location != want {
			t.Errorf("%s: %+v, want mirror %s", host, rt, want)
		}
	}
	if len(r.Files) != 6 {
		t.Errorf("files read: %v", r.Files)
	}
	// Nothing configured: nil, so Open takes its usual path.
	if r, err := LoadRegistries(t.TempDir(), nil); r != nil || err != nil {
		t.Errorf("empty root: %v %v", r, err)
	}
}

func TestLoadRegistriesBadFileStops(t *testing.T) {
	root := t.TempDir()
	p := filepath.Join(root, "etc/sysext/registries.conf")
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte("[[registry]]\nlocation = \n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := LoadRegistries(root, nil)
	if err == nil || !strings.Contains(err.Error(), p+":2:") || !strings.Contains(err.Error(), "fix the file or remove it") {
		t.Fatalf("got %v", err)
	}
}

func TestBlockedReference(t *testing.T) {
	r := parseConf(t, "[[registry]]\nprefix = \"127.0.0.1:1/ext\"\nlocation = \"127.0.0.1:1/ext\"\nblocked = true\n")
	_, err := Open(t.Context(), mustRef(t, "127.0.0.1:1/ext/hello:1"), Options{Registries: r})
	if !errors.Is(err, ErrBlocked) || !strings.Contains(err.Error(), "test.conf") {
		t.Fatalf("got %v", err)
	}
	if _, err := Open(t.Context(), mustRef(t, "127.0.0.1:1/other/hello:1"), Options{Registries: r}); err != nil {
		t.Fatal(err)
	}
}
