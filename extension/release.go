package extension

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// Field names used in os-release(5) and extension-release files.
const (
	FieldID                     = "ID"
	FieldVersionID              = "VERSION_ID"
	FieldSysextLevel            = "SYSEXT_LEVEL"
	FieldArchitecture           = "ARCHITECTURE"
	FieldSysextScope            = "SYSEXT_SCOPE"
	FieldExtensionReloadManager = "EXTENSION_RELOAD_MANAGER"
	FieldSysextID               = "SYSEXT_ID"
	FieldSysextVersionID        = "SYSEXT_VERSION_ID"
	FieldImageID                = "IMAGE_ID"
	FieldImageVersion           = "IMAGE_VERSION"
	FieldIDLike                 = "ID_LIKE"
)

// AnyID is the value of ID= (and ARCHITECTURE=) that matches every host.
const AnyID = "_any"

type entry struct {
	key, value string
}

// Release is an ordered set of KEY=VALUE assignments in os-release(5)
// syntax: an os-release, initrd-release or extension-release file. The zero
// value is an empty release ready to use.
type Release struct {
	entries []entry
}

// ParseError names the line of a release file that could not be parsed.
type ParseError struct {
	Line   int
	Reason string
}

func (e *ParseError) Error() string {
	return fmt.Sprintf("line %d: %s", e.Line, e.Reason)
}

// MaxReleaseSize bounds the release files we parse; systemd's own limit for
// environment files is far larger, but a real os-release is a few KiB.
const MaxReleaseSize = 64 << 10

// ParseRelease parses an os-release(5) style file. Comments, blank lines,
// single and double quotes, backslash escapes and line continuations are
// handled as systemd's environment-file parser does; a later assignment to
// the same key replaces an earlier one, as in a shell.
func ParseRelease(data []byte) (*Release, error) {
	if len(data) > MaxReleaseSize {
		return nil, fmt.Errorf("release file is %d bytes, more than the %d allowed", len(data), MaxReleaseSize)
	}
	if !utf8.Valid(data) {
		return nil, &ParseError{Line: 1 + strings.Count(string(data[:firstInvalidUTF8(data)]), "\n"), Reason: "not valid UTF-8"}
	}
	p := releaseParser{line: 1, r: &Release{}}
	if err := p.run(string(data)); err != nil {
		return nil, err
	}
	return p.r, nil
}

func firstInvalidUTF8(b []byte) int {
	for i := 0; i < len(b); {
		r, n := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && n == 1 {
			return i
		}
		i += n
	}
	return len(b)
}

type parseState int

const (
	stPreKey parseState = iota
	stKey
	stPreValue
	stValue
	stValueEscape
	stSingle
	stDouble
	stDoubleEscape
	stComment
	stCommentEscape
)

type releaseParser struct {
	r        *Release
	line     int
	keyLine  int
	key      strings.Builder
	value    strings.Builder
	trailing int // trailing whitespace bytes of an unquoted value, stripped on commit
}

func (p *releaseParser) commit() error {
	key := strings.TrimRight(p.key.String(), " \t")
	if !validKey(key) {
		return &ParseError{Line: p.keyLine, Reason: fmt.Sprintf("%q is not a valid variable name", key)}
	}
	v := p.value.String()
	v = v[:len(v)-p.trailing]
	p.r.Set(key, v)
	p.key.Reset()
	p.value.Reset()
	p.trailing = 0
	return nil
}

func (p *releaseParser) run(s string) error {
	st := stPreKey
	for _, c := range s {
		switch st {
		case stPreKey:
			switch {
			case c == '#' || c == ';':
				st = stComment
			case c == '\n':
			case c == ' ' || c == '\t' || c == '\r':
			case c == '=':
				p.keyLine = p.line // an empty key, refused by commit
				st = stPreValue
			default:
				p.keyLine = p.line
				p.key.WriteRune(c)
				st = stKey
			}
		case stKey:
			switch c {
			case '=':
				st = stPreValue
			case '\n':
				return &ParseError{Line: p.keyLine, Reason: fmt.Sprintf("%q has no '=': write KEY=VALUE", strings.TrimSpace(p.key.String()))}
			default:
				p.key.WriteRune(c)
			}
		case stPreValue:
			switch c {
			case '\n':
				if err := p.commit(); err != nil {
					return err
				}
				st = stPreKey
			case ' ', '\t', '\r':
			case '\'':
				st = stSingle
			case '"':
				st = stDouble
			case '\\':
				st = stValueEscape
			default:
				p.value.WriteRune(c)
				st = stValue
			}
		case stValue:
			switch c {
			case '\n':
				if err := p.commit(); err != nil {
					return err
				}
				st = stPreKey
			case '\\':
				p.trailing = 0
				st = stValueEscape
			case ' ', '\t', '\r':
				p.value.WriteRune(c)
				p.trailing++
			default:
				p.trailing = 0
				p.value.WriteRune(c)
			}
		case stValueEscape:
			if c != '\n' { // backslash-newline continues the line
				p.value.WriteRune(c)
			}
			st = stValue
		case stSingle:
			if c == '\'' {
				st = stPreValue
			} else {
				p.value.WriteRune(c)
			}
		case stDouble:
			switch c {
			case '"':
				st = stPreValue
			case '\\':
				st = stDoubleEscape
			default:
				p.value.WriteRune(c)
			}
		case stDoubleEscape:
			switch c {
			case '"', '\\', '`', '$':
				p.value.WriteRune(c)
			case '\n':
			default:
				p.value.WriteRune('\\')
				p.value.WriteRune(c)
			}
			st = stDouble
		case stComment:
			switch c {
			case '\\':
				st = stCommentEscape
			case '\n':
				st = stPreKey
			}
		case stCommentEscape:
			// Since systemd 254 a backslash at the end of a comment no
			// longer makes the next line a comment too.
			if c == '\n' {
				st = stPreKey
			} else {
				st = stComment
			}
		}
		if c == '\n' {
			p.line++
		}
	}
	switch st {
	case stKey:
		return &ParseError{Line: p.keyLine, Reason: fmt.Sprintf("%q has no '=': write KEY=VALUE", strings.TrimSpace(p.key.String()))}
	case stSingle, stDouble, stDoubleEscape:
		return &ParseError{Line: p.keyLine, Reason: "unterminated quote"}
	case stPreValue, stValue, stValueEscape:
		return p.commit()
	}
	return nil
}

func validKey(k string) bool {
	if k == "" {
		return false
	}
	for i, c := range k {
		switch {
		case c == '_', c >= 'A' && c <= 'Z', c >= 'a' && c <= 'z':
		case c >= '0' && c <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}

// Get returns the value of key, or "" when it is not set.
func (r *Release) Get(key string) string {
	v, _ := r.Lookup(key)
	return v
}

// Lookup returns the value of key and whether it is set.
func (r *Release) Lookup(key string) (string, bool) {
	if r == nil {
		return "", false
	}
	for _, e := range r.entries {
		if e.key == key {
			return e.value, true
		}
	}
	return "", false
}

// Set assigns key, keeping the position of an earlier assignment. It panics
// on an invalid key: keys come from code, never from input.
func (r *Release) Set(key, value string) {
	if !validKey(key) {
		panic(fmt.Sprintf("extension: invalid release key %q", key))
	}
	for i := range r.entries {
		if r.entries[i].key == key {
			r.entries[i].value = value
			return
		}
	}
	r.entries = append(r.entries, entry{key, value})
}

// Delete removes key.
func (r *Release) Delete(key string) {
	for i := range r.entries {
		if r.entries[i].key == key {
			r.entries = append(r.entries[:i], r.entries[i+1:]...)
			return
		}
	}
}

// Keys returns the keys in file order.
func (r *Release) Keys() []string {
	if r == nil {
		return nil
	}
	keys := make([]string, len(r.entries))
	for i, e := range r.entries {
		keys[i] = e.key
	}
	return keys
}

// Map returns the assignments as a map.
func (r *Release) Map() map[string]string {
	m := make(map[string]string, len(r.Keys()))
	if r != nil {
		for _, e := range r.entries {
			m[e.key] = e.value
		}
	}
	return m
}

// Clone returns an independent copy.
func (r *Release) Clone() *Release {
	c := &Release{}
	if r != nil {
		c.entries = append([]entry(nil), r.entries...)
	}
	return c
}

// Equal reports whether both releases assign the same values to the same
// keys, in any order.
func (r *Release) Equal(o *Release) bool {
	a, b := r.Map(), o.Map()
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// Format writes the release in os-release(5) syntax, one assignment per line
// in file order. Values made only of safe characters are written bare,
// others in double quotes with shell escapes, so ParseRelease(Format()) gives
// back the same assignments.
func (r *Release) Format() []byte {
	var b strings.Builder
	if r != nil {
		for _, e := range r.entries {
			b.WriteString(e.key)
			b.WriteByte('=')
			b.WriteString(quoteValue(e.value))
			b.WriteByte('\n')
		}
	}
	return []byte(b.String())
}

func quoteValue(v string) string {
	bare := v != ""
	for _, c := range v {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune("._-+:/@%,", c)) {
			bare = false
			break
		}
	}
	if bare {
		return v
	}
	var b strings.Builder
	b.WriteByte('"')
	for _, c := range v {
		if c == '"' || c == '\\' || c == '`' || c == '$' {
			b.WriteByte('\\')
		}
		b.WriteRune(c)
	}
	b.WriteByte('"')
	return b.String()
}

// String is Format as a string.
func (r *Release) String() string { return string(r.Format()) }
