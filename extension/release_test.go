package extension

import (
	"errors"
	"strings"
	"testing"
)

func TestParseRelease(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want map[string]string
	}{
		{"empty", "", map[string]string{}},
		{"bare", "ID=debian\nVERSION_ID=12\n", map[string]string{"ID": "debian", "VERSION_ID": "12"}},
		{"no final newline", "ID=debian", map[string]string{"ID": "debian"}},
		{"comments and blanks", "# a comment\n\n; another\n  # indented\nID=fedora\n", map[string]string{"ID": "fedora"}},
		{"double quotes", `PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"`, map[string]string{"PRETTY_NAME": "Debian GNU/Linux 12 (bookworm)"}},
		{"single quotes", `NAME='Fedora Linux'`, map[string]string{"NAME": "Fedora Linux"}},
		{"single quotes keep backslash", `A='a\nb'`, map[string]string{"A": `a\nb`}},
		{"double quote escapes", `A="x\"y\\z\$w\` + "`" + `"`, map[string]string{"A": "x\"y\\z$w`"}},
		{"unknown escape in double quotes kept", `A="a\qb"`, map[string]string{"A": `a\qb`}},
		{"bare escape", `A=a\ b`, map[string]string{"A": "a b"}},
		{"empty value", "VERSION_ID=\n", map[string]string{"VERSION_ID": ""}},
		{"empty quoted value", `VERSION_ID=""`, map[string]string{"VERSION_ID": ""}},
		{"spaces around", "  ID =  debian  \n", map[string]string{"ID": "debian"}},
		{"trailing space stripped", "ID=debian   \t\n", map[string]string{"ID": "debian"}},
		{"inner space kept", "A=a b\n", map[string]string{"A": "a b"}},
		{"later wins", "ID=a\nID=b\n", map[string]string{"ID": "b"}},
		{"line continuation", "A=one\\\ntwo\n", map[string]string{"A": "onetwo"}},
		{"continuation in double quotes", "A=\"one\\\ntwo\"\n", map[string]string{"A": "onetwo"}},
		{"newline inside quotes", "A=\"one\ntwo\"\n", map[string]string{"A": "one\ntwo"}},
		{"concatenated quotes", `A="a"'b'`, map[string]string{"A": "ab"}},
		{"CRLF", "ID=debian\r\nVERSION_ID=12\r\n", map[string]string{"ID": "debian", "VERSION_ID": "12"}},
		{"comment continuation", "# comment \\\nID=x\n", map[string]string{"ID": "x"}},
		{"hash inside value", "A=a#b\n", map[string]string{"A": "a#b"}},
		{"utf8", "NAME=\"Ünïcødé\"\n", map[string]string{"NAME": "Ünïcødé"}},
		{"extension-release", "ID=_any\nARCHITECTURE=x86-64\nSYSEXT_SCOPE=\"system portable\"\nEXTENSION_RELOAD_MANAGER=1\n",
			map[string]string{"ID": "_any", "ARCHITECTURE": "x86-64", "SYSEXT_SCOPE": "system portable", "EXTENSION_RELOAD_MANAGER": "1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := ParseRelease([]byte(tt.in))
			if err != nil {
				t.Fatalf("ParseRelease(%q): %v", tt.in, err)
			}
			got := r.Map()
			if len(got) != len(tt.want) {
				t.Fatalf("ParseRelease(%q) = %q, want %q", tt.in, got, tt.want)
			}
			for k, v := range tt.want {
				if got[k] != v {
					t.Errorf("ParseRelease(%q)[%s] = %q, want %q", tt.in, k, got[k], v)
				}
			}
		})
	}
}

func TestParseReleaseErrors(t *testing.T) {
	tests := []struct {
		name, in string
		line     int
		reason   string
	}{
		{"no equals", "ID=x\nGARBAGE\n", 2, "no '='"},
		{"no equals at end", "GARBAGE", 1, "no '='"},
		{"bad key", "1ID=x\n", 1, "not a valid variable name"},
		{"key with dash", "MY-KEY=x\n", 1, "not a valid variable name"},
		{"empty key", "=x\n", 1, "not a valid variable name"},
		{"unterminated double", "A=\"abc\n", 1, "unterminated quote"},
		{"unterminated single", "A='abc", 1, "unterminated quote"},
		{"invalid utf8", "A=ok\nB=\xff\n", 2, "not valid UTF-8"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseRelease([]byte(tt.in))
			var pe *ParseError
			if !errors.As(err, &pe) {
				t.Fatalf("ParseRelease(%q) error = %v, want a *ParseError", tt.in, err)
			}
			if pe.Line != tt.line || !strings.Contains(pe.Reason, tt.reason) {
				t.Errorf("ParseRelease(%q) = line %d %q, want line %d containing %q", tt.in, pe.Line, pe.Reason, tt.line, tt.reason)
			}
		})
	}
}

func TestParseReleaseTooLarge(t *testing.T) {
	data := []byte("A=" + strings.Repeat("x", MaxReleaseSize) + "\n")
	if _, err := ParseRelease(data); err == nil || !strings.Contains(err.Error(), "more than") {
		t.Fatalf("ParseRelease of %d bytes: err = %v, want a size error", len(data), err)
	}
}

func TestFormatRoundTrip(t *testing.T) {
	values := []string{"", "plain", "with space", `quote"inside`, `back\slash`, "dollar$x", "tick`x", "new\nline", "  lead", "trail  ", "#hash", "'single'", "tab\there", "ünï", "a=b", "x86-64"}
	r := &Release{}
	for i, v := range values {
		r.Set("K"+strings.Repeat("X", i), v)
	}
	out := r.Format()
	back, err := ParseRelease(out)
	if err != nil {
		t.Fatalf("ParseRelease(Format()): %v\n%s", err, out)
	}
	if !back.Equal(r) {
		t.Fatalf("round trip changed the release:\n got %q\nwant %q", back.Map(), r.Map())
	}
	if got := string(back.Format()); got != string(out) {
		t.Fatalf("Format is not stable:\n%s\n---\n%s", out, got)
	}
}

func TestFormatBare(t *testing.T) {
	r := &Release{}
	r.Set("ID", "_any")
	r.Set("ARCHITECTURE", "x86-64")
	r.Set("SYSEXT_SCOPE", "system portable")
	r.Set("VERSION_ID", "")
	want := "ID=_any\nARCHITECTURE=x86-64\nSYSEXT_SCOPE=\"system portable\"\nVERSION_ID=\"\"\n"
	if got := r.String(); got != want {
		t.Fatalf("Format =\n%s\nwant\n%s", got, want)
	}
}

func TestReleaseSetKeepsOrderAndDelete(t *testing.T) {
	r, err := ParseRelease([]byte("A=1\nB=2\nC=3\n"))
	if err != nil {
		t.Fatal(err)
	}
	r.Set("A", "9")
	r.Delete("B")
	r.Set("D", "4")
	if got := strings.Join(r.Keys(), ","); got != "A,C,D" {
		t.Fatalf("keys = %s, want A,C,D", got)
	}
	if r.Get("A") != "9" {
		t.Fatalf("A = %q", r.Get("A"))
	}
	c := r.Clone()
	c.Set("A", "0")
	if r.Get("A") != "9" {
		t.Fatal("Clone shares entries with the original")
	}
	var nilRel *Release
	if v, ok := nilRel.Lookup("ID"); ok || v != "" {
		t.Fatal("nil release has a value")
	}
}

func FuzzParseRelease(f *testing.F) {
	for _, s := range []string{
		"", "ID=debian\n", "A=\"x\\\"y\"\n", "A='b c'\n", "# c\nA=1\\\n2\n", "A=\"\n\"", "A=a\\", "A= b \n",
		"NAME=\"Ünï\"\r\n", "A=\"a\\qb\"", "=\n", "A\n", "A='", "A=\"\\\n\"", "K=$`\\\"\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := ParseRelease(data)
		if err != nil {
			return
		}
		out := r.Format()
		back, err := ParseRelease(out)
		if err != nil {
			t.Fatalf("Format output does not parse: %v\ninput %q\noutput %q", err, data, out)
		}
		if !back.Equal(r) {
			t.Fatalf("parse→format→parse changed values\ninput %q\nfirst %q\nsecond %q", data, r.Map(), back.Map())
		}
		if again := back.Format(); string(again) != string(out) {
			t.Fatalf("format is not stable: %q vs %q", out, again)
		}
	})
}
