package fsimage

import (
	"strings"
	"testing"
	"unicode/utf8"
)

// Names from an image go through the one escaping of every printer; a long
// one is cut in the middle without splitting a character.
func TestShown(t *testing.T) {
	if got := shown("usr/bin/ev\u202eil\n"); got != `usr/bin/ev\u202eil\n` {
		t.Errorf("escaped: %q", got)
	}
	long := "x" + strings.Repeat("é", 100) // byte 80 is inside a character
	got := shown(long)
	if !utf8.ValidString(got) || !strings.Contains(got, "é...é") || len(got) > 160 {
		t.Errorf("cut: %q", got)
	}
}
