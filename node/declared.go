package node

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/sysext/sysext/extension"
	"github.com/sysext/sysext/internal/inroot"
	"github.com/sysext/sysext/internal/smallfile"
	"github.com/sysext/sysext/store"
)

// Directories of declared extensions, as seen on the running system. A
// file in /etc replaces the file of the same name in /usr/lib.
var DeclaredDirs = []string{"/etc/sysext/extensions.d", "/usr/lib/sysext/extensions.d"}

// Declared is one extension declared in an extensions.d file:
//
//	[Extension]
//	Name=docker
//	Source=ghcr.io/acme/sysext/docker:24-{ID}{VERSION_ID}
//	Policy=/etc/sysext/policy.d/acme.json
//	InsecureAllowUnsigned=no
type Declared struct {
	File          string      // path on the running system
	Name          string      // default: the file name without .conf
	Source        string      // as written, with {VARIABLES}
	SourceLine    int         // the line of Source=, for errors
	Policy        string      // as written: a policy file or key:PATH[,PATH], paths inside the root
	Trust         store.Trust // what Policy says (store.ParseTrust)
	PolicyLine    int         // the line of Policy=, for errors
	AllowUnsigned bool
}

// SourceFrom names where Source was written, "FILE:LINE", for errors.
func (d Declared) SourceFrom() string {
	if d.SourceLine == 0 {
		return d.File
	}
	return fmt.Sprintf("%s:%d", d.File, d.SourceLine)
}

// PolicyFrom names where Policy was written, "FILE:LINE", for errors.
func (d Declared) PolicyFrom() string {
	if d.PolicyLine == 0 {
		return d.File
	}
	return fmt.Sprintf("%s:%d", d.File, d.PolicyLine)
}

const maxDeclaredSize = 64 << 10

// ReadDeclared reads the declared set under root. Every path, the
// directories' and the files', is resolved inside root (internal/inroot),
// as the paths the declarations name are later.
func ReadDeclared(root string) ([]Declared, error) {
	files := map[string]string{} // base name -> path on the running system
	for i := len(DeclaredDirs) - 1; i >= 0; i-- {
		ents, err := inroot.ReadDir(root, DeclaredDirs[i])
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("declared extensions: %w", err)
		}
		for _, e := range ents {
			if strings.HasSuffix(e.Name(), ".conf") && !strings.HasPrefix(e.Name(), ".") {
				files[e.Name()] = filepath.Join(DeclaredDirs[i], e.Name())
			}
		}
	}
	bases := make([]string, 0, len(files))
	for b := range files {
		bases = append(bases, b)
	}
	sort.Strings(bases)
	var out []Declared
	seen := map[string]string{}
	for _, b := range bases {
		p := files[b]
		data, err := inroot.ReadFile(root, p, maxDeclaredSize)
		var tl *smallfile.TooLargeError
		if errors.As(err, &tl) {
			return nil, fmt.Errorf("%s: more than the %d bytes allowed", p, maxDeclaredSize)
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		if len(data) == 0 {
			continue // an empty file in /etc masks the one in /usr/lib
		}
		d, err := ParseDeclared(p, data)
		if err != nil {
			return nil, err
		}
		if other, dup := seen[d.Name]; dup {
			return nil, fmt.Errorf("%s: extension %s is already declared in %s: keep one", p, d.Name, other)
		}
		seen[d.Name] = p
		out = append(out, d)
	}
	return out, nil
}

// ParseDeclared parses one extensions.d file (systemd-style INI).
func ParseDeclared(path string, data []byte) (Declared, error) {
	d := Declared{File: path, Name: strings.TrimSuffix(filepath.Base(path), ".conf")}
	section := ""
	sc := bufio.NewScanner(bytes.NewReader(data))
	line := 0
	for sc.Scan() {
		line++
		l := strings.TrimSpace(sc.Text())
		if l == "" || l[0] == '#' || l[0] == ';' {
			continue
		}
		if strings.HasPrefix(l, "[") {
			if !strings.HasSuffix(l, "]") {
				return d, fmt.Errorf("%s:%d: bad section header %q", path, line, l)
			}
			section = l[1 : len(l)-1]
			if section != "Extension" {
				return d, fmt.Errorf("%s:%d: unknown section [%s]: use [Extension]", path, line, section)
			}
			continue
		}
		if section == "" {
			return d, fmt.Errorf("%s:%d: assignment outside a section: start the file with [Extension]", path, line)
		}
		k, v, ok := strings.Cut(l, "=")
		if !ok {
			return d, fmt.Errorf("%s:%d: expected KEY=VALUE, got %q", path, line, l)
		}
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		switch k {
		case "Name":
			d.Name = v
		case "Source":
			d.Source, d.SourceLine = v, line
		case "Policy":
			t, err := parseDeclaredPolicy(v)
			if err != nil {
				return d, fmt.Errorf("%s:%d: Policy=%s: %w", path, line, v, err)
			}
			d.Policy, d.Trust, d.PolicyLine = v, t, line
		case "InsecureAllowUnsigned":
			b, err := parseBool(v)
			if err != nil {
				return d, fmt.Errorf("%s:%d: InsecureAllowUnsigned: %w", path, line, err)
			}
			d.AllowUnsigned = b
		default:
			return d, fmt.Errorf("%s:%d: unknown key %q: use Name, Source, Policy or InsecureAllowUnsigned", path, line, k)
		}
	}
	if err := extension.ValidateName(d.Name); err != nil {
		return d, fmt.Errorf("%s: %w", path, err)
	}
	if d.Source == "" {
		return d, fmt.Errorf("%s: no Source=: give the reference to pull %s from", path, d.Name)
	}
	return d, nil
}

// parseDeclaredPolicy reads a declaration's Policy= value: its paths are
// absolute paths on the node (they are resolved inside --root).
func parseDeclaredPolicy(v string) (store.Trust, error) {
	t, err := store.ParseTrust(v)
	if err != nil {
		return t, err
	}
	paths := append([]string{t.PolicyPath, t.TrustedRootPath}, t.KeyPaths...)
	if strings.HasPrefix(v, "key:") && len(t.KeyPaths) == 1 && t.KeyPaths[0] == "" {
		return t, errors.New("key: names no key file: write key:/etc/sysext/KEY.pub")
	}
	for _, p := range paths {
		if p != "" && !filepath.IsAbs(p) {
			return t, fmt.Errorf("%q is relative: give the absolute path as seen on the node (it is read inside --root)", p)
		}
	}
	return t, nil
}

func parseBool(s string) (bool, error) {
	switch strings.ToLower(s) {
	case "1", "yes", "y", "true", "t", "on":
		return true, nil
	case "0", "no", "n", "false", "f", "off":
		return false, nil
	}
	return false, fmt.Errorf("%q is not a boolean", s)
}

// ExpandSource replaces {ID}, {VERSION_ID}, {VERSION_CODENAME},
// {SYSEXT_LEVEL} (from os-release) and {ARCHITECTURE} (systemd naming) in
// source.
func ExpandSource(source string, osr *extension.Release, arch extension.Arch) (string, error) {
	var b strings.Builder
	rest := source
	for {
		i := strings.IndexByte(rest, '{')
		if i < 0 {
			b.WriteString(rest)
			break
		}
		j := strings.IndexByte(rest[i:], '}')
		if j < 0 {
			return "", fmt.Errorf("source %q: unclosed '{'", source)
		}
		b.WriteString(rest[:i])
		v := rest[i+1 : i+j]
		var val string
		switch v {
		case "ARCHITECTURE":
			val = string(arch)
		case "ID", "VERSION_ID", "VERSION_CODENAME", "SYSEXT_LEVEL":
			val = osr.Get(v)
			if val == "" {
				return "", fmt.Errorf("source %q: the OS's os-release has no %s", source, v)
			}
		default:
			return "", fmt.Errorf("source %q: unknown variable {%s}: use {ID}, {VERSION_ID}, {VERSION_CODENAME}, {SYSEXT_LEVEL} or {ARCHITECTURE}", source, v)
		}
		b.WriteString(val)
		rest = rest[i+j+1:]
	}
	return b.String(), nil
}
