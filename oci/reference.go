package oci

import (
	"fmt"
	"net"
	"path/filepath"
	"strings"

	"github.com/opencontainers/go-digest"
	"oras.land/oras-go/v2/registry"
)

// LayoutScheme prefixes a reference to an OCI image layout directory.
const LayoutScheme = "oci:"

// DefaultTag is used when a reference names neither a tag nor a digest.
const DefaultTag = "latest"

// Reference names an artifact in a registry (Registry, Repository) or in an
// OCI image layout directory (Layout), by Tag, Digest or both (the digest
// wins when both are given, the tag is kept for display and for pushing).
type Reference struct {
	Registry   string // host[:port]; "" for a layout
	Repository string // path in the registry; "" for a layout
	Layout     string // directory of an OCI image layout; "" for a registry
	Tag        string
	Digest     digest.Digest
}

// ParseReference parses host[:port]/repo[:tag][@sha256:hex] and
// oci:PATH[:tag][@sha256:hex]. A reference with neither tag nor digest gets
// the tag "latest". Short Docker Hub names ("ubuntu") are refused: name the
// registry.
func ParseReference(s string) (Reference, error) {
	if rest, ok := strings.CutPrefix(s, LayoutScheme); ok {
		return parseLayoutReference(s, rest)
	}
	var r Reference
	i := strings.IndexByte(s, '/')
	if i <= 0 {
		return r, fmt.Errorf("reference %q: name the registry, as in host[:port]/repo:tag, or use oci:PATH[:tag] for an OCI layout", s)
	}
	host := s[:i]
	if !strings.ContainsAny(host, ".:") && host != "localhost" {
		return r, fmt.Errorf("reference %q: %q is not a registry host (no '.' or ':'): name the registry, e.g. docker.io/%s", s, host, s)
	}
	ref, err := registry.ParseReference(s)
	if err != nil {
		return r, fmt.Errorf("reference %q: %w", s, err)
	}
	r.Registry, r.Repository = ref.Registry, ref.Repository
	rest := s[i+1:]
	if at := strings.LastIndexByte(rest, '@'); at >= 0 {
		d, err := digest.Parse(rest[at+1:])
		if err != nil {
			return Reference{}, fmt.Errorf("reference %q: digest: %w", s, err)
		}
		r.Digest = d
		rest = rest[:at]
	}
	if c := strings.LastIndexByte(rest, ':'); c >= 0 {
		r.Tag = rest[c+1:]
	}
	if r.Tag == "" && r.Digest == "" {
		r.Tag = DefaultTag
	}
	return r, nil
}

func parseLayoutReference(s, rest string) (Reference, error) {
	var r Reference
	if at := strings.LastIndexByte(rest, '@'); at >= 0 {
		d, err := digest.Parse(rest[at+1:])
		if err != nil {
			return r, fmt.Errorf("reference %q: digest: %w", s, err)
		}
		r.Digest = d
		rest = rest[:at]
	}
	// The tag follows the last ':' after the last '/', so directories with
	// ':' in a parent name still work.
	if c := strings.LastIndexByte(rest, ':'); c > strings.LastIndexByte(rest, '/') {
		r.Tag = rest[c+1:]
		rest = rest[:c]
		if r.Tag == "" {
			return Reference{}, fmt.Errorf("reference %q: empty tag after ':'", s)
		}
		if err := (registry.Reference{Registry: "x", Repository: "x", Reference: r.Tag}).ValidateReferenceAsTag(); err != nil {
			return Reference{}, fmt.Errorf("reference %q: %w", s, err)
		}
	}
	if rest == "" {
		return Reference{}, fmt.Errorf("reference %q: no directory after %q", s, LayoutScheme)
	}
	r.Layout = filepath.Clean(rest)
	if r.Tag == "" && r.Digest == "" {
		r.Tag = DefaultTag
	}
	return r, nil
}

// IsLayout reports whether r names an OCI image layout directory.
func (r Reference) IsLayout() bool { return r.Layout != "" }

// Reference returns what to resolve in the store: the digest when known,
// else the tag.
func (r Reference) Reference() string {
	if r.Digest != "" {
		return r.Digest.String()
	}
	return r.Tag
}

// WithDigest returns r pinned to d (the tag is kept for display).
func (r Reference) WithDigest(d digest.Digest) Reference {
	r.Digest = d
	return r
}

// WithTag returns r with tag t and no digest.
func (r Reference) WithTag(t string) Reference {
	r.Tag, r.Digest = t, ""
	return r
}

// Scope is the registry scope used by trust policies: host/repo, or
// oci:PATH for a layout.
func (r Reference) Scope() string {
	if r.IsLayout() {
		return LayoutScheme + r.Layout
	}
	return r.Registry + "/" + r.Repository
}

// String formats r so that ParseReference(r.String()) == r.
func (r Reference) String() string {
	s := r.Scope()
	if r.Tag != "" {
		s += ":" + r.Tag
	}
	if r.Digest != "" {
		s += "@" + r.Digest.String()
	}
	return s
}

// IsLoopback reports whether the registry host is a loopback address
// (localhost, 127.0.0.0/8, ::1), which we talk to over plain HTTP.
func (r Reference) IsLoopback() bool {
	if r.IsLayout() {
		return false
	}
	return IsLoopbackHost(r.Registry)
}

// IsLoopbackHost reports whether host[:port] is a loopback address.
func IsLoopbackHost(hostport string) bool {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	host = strings.Trim(host, "[]")
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
