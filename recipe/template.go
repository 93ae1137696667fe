package recipe

import (
	"fmt"
	"slices"
	"strings"
)

// Templates are plain strings with ${name} references; "$$" is a literal '$'.
// Only URLs, checksum entries and archive paths are templates: unit and
// config contents are shipped as written, so systemd's own ${VAR} syntax
// in them needs no escaping.

// templateVars returns the names a template references.
func templateVars(s string) ([]string, error) {
	var out []string
	for i := 0; i < len(s); i++ {
		if s[i] != '$' {
			continue
		}
		if i+1 < len(s) && s[i+1] == '$' {
			i++
			continue
		}
		if i+1 >= len(s) || s[i+1] != '{' {
			return nil, fmt.Errorf("%q: a '$' starts ${name} (write $$ for a literal '$')", s)
		}
		end := strings.IndexByte(s[i:], '}')
		if end < 0 {
			return nil, fmt.Errorf("%q: ${ without a closing }", s)
		}
		out = append(out, s[i+2:i+end])
		i += end
	}
	return out, nil
}

// checkVars reports a template that references an unknown variable.
func checkVars(s string, known map[string]string, extra []string) error {
	names, err := templateVars(s)
	if err != nil {
		return err
	}
	for _, n := range names {
		if _, ok := known[n]; ok || slices.Contains(extra, n) {
			continue
		}
		k := append(sortedKeys(known), extra...)
		return fmt.Errorf("%q uses ${%s}, which is not defined: use one of %s", s, n, strings.Join(k, ", "))
	}
	return nil
}

// expand substitutes vars into s.
func expand(s string, vars map[string]string) (string, error) {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '$' {
			b.WriteByte(s[i])
			continue
		}
		if i+1 < len(s) && s[i+1] == '$' {
			b.WriteByte('$')
			i++
			continue
		}
		if i+1 >= len(s) || s[i+1] != '{' {
			return "", fmt.Errorf("%q: a '$' starts ${name}", s)
		}
		end := strings.IndexByte(s[i:], '}')
		if end < 0 {
			return "", fmt.Errorf("%q: ${ without a closing }", s)
		}
		name := s[i+2 : i+end]
		v, ok := vars[name]
		if !ok {
			return "", fmt.Errorf("%q: ${%s} is not defined", s, name)
		}
		b.WriteString(v)
		i += end
	}
	return b.String(), nil
}
