package extension

import (
	"fmt"
	"path"
	"strings"
	"unicode"
	"unicode/utf8"
)

// The rules for values sysext writes into systemd's own files: unit files
// and drop-ins (Upholds=, ExecStart=), tmpfiles.d lines, sysupdate.d
// transfers. Every writer of such a file checks its values here, so one
// rule decides what may end up in a line systemd parses.
//
// systemd reads these files line by line and ends a line at '\n', '\r' or
// NUL, so such a character in a value would start a new line: a new
// setting, or a new tmpfiles.d rule ("C /root/.ssh/authorized_keys ...").
// In whitespace-separated files (tmpfiles.d, ExecStart=) a space starts a
// new field, quotes and backslashes are unescaped, and '%' starts a
// specifier (and '$' a variable in ExecStart=).

// ValidateLineValue checks a value written into one line of a systemd file:
// valid UTF-8 without line breaks, NUL or other control characters.
func ValidateLineValue(what, v string) error {
	if !utf8.ValidString(v) {
		return fmt.Errorf("%s %q is not valid UTF-8", what, v)
	}
	for _, c := range v {
		switch {
		case c == '\n' || c == '\r':
			return fmt.Errorf("%s %q contains a line break: it would add lines to a systemd file", what, v)
		case unicode.IsControl(c) && c != '\t':
			return fmt.Errorf("%s %q contains a control character", what, v)
		case c == '\u2028' || c == '\u2029':
			return fmt.Errorf("%s %q contains a Unicode line separator", what, v)
		}
	}
	return nil
}

// lineWordSpecial are the characters a field of a whitespace-separated
// systemd line would interpret rather than take literally.
const lineWordSpecial = "\"'\\%$;`"

// ValidateLineWord checks a value written as one whitespace-separated field
// of a systemd line (a tmpfiles.d path or argument, an ExecStart= argument,
// a transfer's Path=): ValidateLineValue, not empty, and no whitespace,
// quote, backslash, '%', '$', ';' or '`', which systemd would split,
// unescape or expand.
func ValidateLineWord(what, v string) error {
	if v == "" {
		return fmt.Errorf("%s is empty", what)
	}
	if err := ValidateLineValue(what, v); err != nil {
		return err
	}
	for _, c := range v {
		if unicode.IsSpace(c) || strings.ContainsRune(lineWordSpecial, c) {
			return fmt.Errorf("%s %q contains %q, which systemd would not take literally in a line", what, v, c)
		}
	}
	return nil
}

// ValidateLinePath is ValidateLineWord for an absolute, clean path.
func ValidateLinePath(what, p string) error {
	if err := ValidateLineWord(what, p); err != nil {
		return err
	}
	if !path.IsAbs(p) || path.Clean(p) != p {
		return fmt.Errorf("%s %q: give a clean absolute path", what, p)
	}
	return nil
}

// unitSuffixes are systemd's unit types.
var unitSuffixes = []string{".service", ".socket", ".timer", ".path", ".mount", ".automount", ".target", ".slice", ".scope", ".swap", ".device"}

// ValidateUnitName checks a unit name as systemd does (unit_name_is_valid):
// at most 255 bytes, a known type suffix, and only ASCII letters, digits and
// ":-_.\" before it, with at most one '@' (a template or an instance). The
// name then is safe as a file name and in Upholds= and Wants= lines.
func ValidateUnitName(name string) error {
	if len(name) > 255 {
		return fmt.Errorf("unit name %.20q... is longer than 255 bytes", name)
	}
	suffix := path.Ext(name)
	known := false
	for _, s := range unitSuffixes {
		known = known || suffix == s
	}
	prefix := strings.TrimSuffix(name, suffix)
	if !known || prefix == "" {
		return fmt.Errorf("%q is not a unit name (NAME.service, .socket, .timer, .path, ...)", name)
	}
	if strings.Count(prefix, "@") > 1 || strings.HasPrefix(prefix, "@") {
		return fmt.Errorf("unit name %q: at most one '@', after the name", name)
	}
	for _, c := range prefix {
		if !(c < utf8.RuneSelf && (isAlpha(byte(c)) || isDigit(byte(c)) || strings.ContainsRune(":-_.\\@", c))) {
			return fmt.Errorf("unit name %q contains %q: systemd allows ASCII letters, digits and \":-_.\\\" (and one '@')", name, c)
		}
	}
	return nil
}
