package extension

import (
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Escape returns s as it may be shown to people: every character that is
// not shown as itself (control characters such as ESC and newline, Unicode
// format characters such as U+202E, invalid UTF-8, unassigned code points)
// is replaced by its Go escape (\x1b, \n, \u202e, \xff); everything else is
// kept. Every printer of untrusted text (names, versions, annotations,
// signers, registry messages) goes through it, so a value cannot move the
// cursor, reorder the line or hide characters on a terminal.
func Escape(s string) string {
	if printable(s) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			b.WriteString(`\x` + strconv.FormatUint(uint64(s[i]), 16))
		case r == ' ' || unicode.IsPrint(r):
			b.WriteString(s[i : i+size])
		default:
			q := strconv.QuoteRuneToASCII(r) // '\u202e', '\x1b', '\n'
			b.WriteString(q[1 : len(q)-1])
		}
		i += size
	}
	return b.String()
}

// EscapeLines is Escape for text of several lines and columns (an error
// message, a table): line breaks and tabs are kept.
func EscapeLines(s string) string {
	if printable(strings.NewReplacer("\n", "", "\t", "").Replace(s)) {
		return s
	}
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		cols := strings.Split(l, "\t")
		for j, c := range cols {
			cols[j] = Escape(c)
		}
		lines[i] = strings.Join(cols, "\t")
	}
	return strings.Join(lines, "\n")
}

func printable(s string) bool {
	for _, r := range s {
		if r == utf8.RuneError || !(r == ' ' || unicode.IsPrint(r)) {
			return false
		}
	}
	return true
}

// ShortDigest is how a digest ("sha256:<hex>") is shown to people and in
// the names derived from it: its first 12 hex digits, without the
// algorithm, as a short id (list's columns, result lines, messages, the
// store's name for a second file of one version). A value shorter than that
// is returned as it is.
func ShortDigest(d string) string {
	if _, hex, ok := strings.Cut(d, ":"); ok {
		d = hex
	}
	if len(d) > 12 {
		return d[:12]
	}
	return d
}
