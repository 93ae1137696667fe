package oci

import (
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strconv"
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

// ErrInvalidReference is wrapped by every error of ParseReference: the
// reference was written wrong (a usage error), as opposed to one that
// could not be reached.
var ErrInvalidReference = errors.New("invalid reference")

// referenceError is a malformed reference and what to write instead.
type referenceError struct{ ref, msg string }

func (e *referenceError) Error() string { return fmt.Sprintf("reference %q: %s", e.ref, e.msg) }
func (e *referenceError) Unwrap() error { return ErrInvalidReference }

func badReference(s, format string, args ...any) error {
	return &referenceError{ref: s, msg: fmt.Sprintf(format, args...)}
}

// ParseReference parses host[:port]/repo[:tag][@sha256:hex] and
// oci:PATH[:tag][@sha256:hex]. A reference with neither tag nor digest gets
// the tag "latest". Short Docker Hub names ("ubuntu") are refused: name the
// registry. Every error wraps ErrInvalidReference and says what to write.
func ParseReference(s string) (Reference, error) {
	if rest, ok := strings.CutPrefix(s, LayoutScheme); ok {
		return parseLayoutReference(s, rest)
	}
	var r Reference
	if scheme, rest, ok := strings.Cut(s, "://"); ok && scheme != "" && !strings.Contains(scheme, "/") {
		return r, badReference(s, "drop the scheme %q: write %s (loopback registries are spoken to over plain HTTP, others with --plain-http)", scheme+"://", rest)
	}
	i := strings.IndexByte(s, '/')
	if i <= 0 {
		return r, badReference(s, "name the registry, as in host[:port]/repo:tag, or use oci:PATH[:tag] for an OCI layout")
	}
	host := s[:i]
	if !strings.ContainsAny(host, ".:") && host != "localhost" {
		msg := fmt.Sprintf("%q is not a registry host (no '.' or ':'): name the registry", host)
		name := s[:strings.IndexAny(s+"@", ":@")]
		if hint := "docker.io/" + strings.ToLower(name) + s[len(name):]; validRegistryReference(hint) {
			msg += ", e.g. " + hint
			if name != strings.ToLower(name) {
				msg += " (repository names are lowercase)"
			}
		}
		return r, badReference(s, "%s", msg)
	}
	if err := checkHostPort(host); err != nil {
		return r, badReference(s, "%v", err)
	}
	ref, err := registry.ParseReference(s)
	if err != nil {
		repo := s[i+1:]
		if j := strings.IndexAny(repo, ":@"); j >= 0 {
			repo = repo[:j]
		}
		if repo != strings.ToLower(repo) {
			return r, badReference(s, "repository names are lowercase: write %s/%s%s", host, strings.ToLower(repo), s[i+1+len(repo):])
		}
		return r, badReference(s, "%v", err)
	}
	r.Registry, r.Repository = ref.Registry, ref.Repository
	rest := s[i+1:]
	if at := strings.LastIndexByte(rest, '@'); at >= 0 {
		d, err := digest.Parse(rest[at+1:])
		if err != nil {
			return Reference{}, badReference(s, "digest: %v", err)
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

// ParseRegistry checks a registry host[:port] as login and logout take it:
// no scheme, no repository, a port from 1 to 65535. Errors wrap
// ErrInvalidReference.
func ParseRegistry(host string) error {
	if scheme, rest, ok := strings.Cut(host, "://"); ok {
		return badReference(host, "drop the scheme %q: write %s", scheme+"://", strings.TrimSuffix(rest, "/"))
	}
	if host == "" || strings.Contains(host, "/") {
		return badReference(host, "give the registry as host[:port] only, not a repository")
	}
	if err := checkHostPort(host); err != nil {
		return badReference(host, "%v", err)
	}
	return nil
}

// validRegistryReference reports whether a suggestion we would print parses.
func validRegistryReference(s string) bool {
	_, err := registry.ParseReference(s)
	return err == nil
}

// checkHostPort refuses a port that is not a number from 1 to 65535, so
// the reference is refused here and not when dialling.
func checkHostPort(host string) error {
	if strings.HasPrefix(host, "[") && !strings.Contains(host, "]:") {
		return nil // [::1] without a port
	}
	if strings.Count(host, ":") == 0 {
		return nil
	}
	h, port, err := net.SplitHostPort(host)
	if err != nil {
		return fmt.Errorf("host %q: %v", host, err)
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 1 || n > 65535 || port != strconv.Itoa(n) {
		return fmt.Errorf("port %q of %s is not a number from 1 to 65535", port, h)
	}
	return nil
}

func parseLayoutReference(s, rest string) (Reference, error) {
	var r Reference
	if at := strings.LastIndexByte(rest, '@'); at >= 0 {
		d, err := digest.Parse(rest[at+1:])
		if err != nil {
			return r, badReference(s, "digest: %v", err)
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
			return Reference{}, badReference(s, "empty tag after ':'")
		}
		if err := (registry.Reference{Registry: "x", Repository: "x", Reference: r.Tag}).ValidateReferenceAsTag(); err != nil {
			return Reference{}, badReference(s, "%v", err)
		}
	}
	if rest == "" {
		return Reference{}, badReference(s, "no directory after %q", LayoutScheme)
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
