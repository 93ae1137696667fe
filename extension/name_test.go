package extension

import (
	"strings"
	"testing"
)

func TestValidateName(t *testing.T) {
	good := []string{"docker", "docker-compose", "k3s", "a", "python3.12", "foo_bar", "Ünïcode", "x@y", strings.Repeat("n", MaxNameLen)}
	for _, n := range good {
		if err := ValidateName(n); err != nil {
			t.Errorf("ValidateName(%q) = %v, want nil", n, err)
		}
	}
	bad := map[string]string{
		"":                                "empty",
		".":                               "not a valid file name",
		"..":                              "not a valid file name",
		".hidden":                         "starts with '.'",
		"-flag":                           "starts with '-'",
		"backup~":                         "ends with '~'",
		"a/b":                             `contains '/'`,
		`a\b`:                             `contains '\\'`,
		"a b":                             "whitespace",
		"tab\tx":                          "control character",
		"nl\n":                            "control character",
		"nul\x00":                         "control character",
		"del\x7f":                         "control character",
		"bad\xffutf8":                     "not valid UTF-8",
		strings.Repeat("n", MaxNameLen+1): "at most",
	}
	for n, want := range bad {
		err := ValidateName(n)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ValidateName(%q) = %v, want an error containing %q", n, err, want)
		}
	}
}

func TestValidateVersion(t *testing.T) {
	for _, v := range []string{"1.0", "24.0.9", "v1.2.3-rc1", "2024.01.01+git5"} {
		if err := ValidateVersion(v); err != nil {
			t.Errorf("ValidateVersion(%q) = %v", v, err)
		}
	}
	for _, v := range []string{"", "1/2", "..", "1 2", "-1"} {
		if err := ValidateVersion(v); err == nil {
			t.Errorf("ValidateVersion(%q) = nil, want an error", v)
		} else if !strings.Contains(err.Error(), "extension version") {
			t.Errorf("ValidateVersion(%q) = %v, want it to name the version", v, err)
		}
	}
}

func TestPathsAndFileName(t *testing.T) {
	if got := ReleasePath("docker"); got != "usr/lib/extension-release.d/extension-release.docker" {
		t.Errorf("ReleasePath = %q", got)
	}
	if got := FileName("docker", "24.0.9", "x86-64"); got != "docker-24.0.9-x86-64.raw" {
		t.Errorf("FileName = %q", got)
	}
	// The longest valid name and version still make a file name that fits
	// NAME_MAX together with a temp prefix and suffix.
	long := strings.Repeat("n", MaxNameLen)
	if n := len(".#" + FileName(long, long, "loongarch64") + ".1234567890"); n > 255 {
		t.Errorf("longest file name with temp affixes is %d bytes", n)
	}
}

func TestIsMergeDir(t *testing.T) {
	for dir, want := range map[string]bool{
		"/var/lib/extensions":           true,
		"/etc/extensions":               true,
		"/sysroot/run/extensions":       true,
		"/etc/confexts":                 true,
		"/home/ci/out":                  false,
		"/var/lib/extensions.d":         false,
		"/home/ci/myvar/lib/extensions": false,
	} {
		if got := IsMergeDir(dir); got != want {
			t.Errorf("IsMergeDir(%s) = %v, want %v", dir, got, want)
		}
	}
}

// TestNamesShowAsThemselves: names and versions that would display as
// something else (a right-to-left override, zero-width characters) are
// refused, and Escape shows such text as escapes.
func TestNamesShowAsThemselves(t *testing.T) {
	for _, n := range []string{"doc\u202Ekcod", "dock\u200Ber", "\uFEFFdocker", "a\u2060b", "priv\uE000", "sp\u00A0ace", "x\u2028y"} {
		if err := ValidateName(n); err == nil {
			t.Errorf("ValidateName(%q) = nil", n)
		}
		if err := ValidateVersion("1." + n); err == nil {
			t.Errorf("ValidateVersion(%q) = nil", "1."+n)
		}
	}
	for _, v := range []string{"1.0é", "1:2", "1/2", "1 2", "24.0.9\u202E"} {
		if err := ValidateVersion(v); err == nil {
			t.Errorf("ValidateVersion(%q) = nil", v)
		}
	}
	for _, v := range []string{"2.0~rc1", "123^1", "1,2", "1_2+git"} {
		if err := ValidateVersion(v); err != nil {
			t.Errorf("ValidateVersion(%q) = %v", v, err)
		}
	}
	for in, want := range map[string]string{
		"docker":             "docker",
		"Ünïcode café":       "Ünïcode café",
		"doc\u202Ekcod":      `doc\u202ekcod`,
		"zero\u200Bwidth":    `zero\u200bwidth`,
		"\x1b[31mred\x1b[0m": `\x1b[31mred\x1b[0m`,
		"line\nbreak\r":      `line\nbreak\r`,
		"bad\xffutf8":        `bad\xffutf8`,
		"tab\there":          `tab\there`,
	} {
		if got := Escape(in); got != want {
			t.Errorf("Escape(%q) = %q, want %q", in, got, want)
		}
	}
	if got := EscapeLines("a\tz\nb\x1b\n"); got != "a\tz\nb\\x1b\n" {
		t.Errorf("EscapeLines = %q", got)
	}
}

// Titles of artifact layers name the files fetch writes: one component,
// not hidden, shown as themselves; spaces are allowed, "..", separators
// and invisible characters are not.
func TestValidateFileName(t *testing.T) {
	for _, n := range []string{"hello.raw", "read me.txt", "x-1.0~rc1", "-dash", "Ünïcode.tar"} {
		if err := ValidateFileName(n); err != nil {
			t.Errorf("ValidateFileName(%q) = %v", n, err)
		}
	}
	for n, want := range map[string]string{
		"":                       "empty",
		".":                      "not a valid file name",
		".hidden":                "starts with '.'",
		"a..b":                   `contains ".."`,
		"a/b":                    `contains '/'`,
		`a\b`:                    `contains '\\'`,
		"nul\x00":                "control character",
		"c1\u0085":               "control character",
		"docker\u202E.raw":       "U+202E",
		"\u200Bdocker.raw":       "U+200B",
		"bad\xff.raw":            "not valid UTF-8",
		strings.Repeat("n", 256): "at most 255",
		"nbsp\u00a0x":            "U+00A0",
	} {
		if err := ValidateFileName(n); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ValidateFileName(%q) = %v, want an error containing %q", n, err, want)
		}
	}
}

// Store files and activation links: extension names that end in .raw.
func TestValidateImageFile(t *testing.T) {
	if err := ValidateImageFile("hello-1.0-x86-64.raw"); err != nil {
		t.Fatal(err)
	}
	for n, want := range map[string]string{
		"hello-1.0":     "does not end in .raw",
		"hello 1.0.raw": "whitespace",
		".hello.raw":    "starts with '.'",
		"a/../x.raw":    "contains '/'",
	} {
		if err := ValidateImageFile(n); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ValidateImageFile(%q) = %v, want an error containing %q", n, err, want)
		}
	}
}

func TestShortDigest(t *testing.T) {
	for in, want := range map[string]string{
		"sha256:0123456789abcdef0123": "0123456789ab",
		"0123456789abcdef":            "0123456789ab",
		"sha256:abc":                  "abc",
		"":                            "",
	} {
		if got := ShortDigest(in); got != want {
			t.Errorf("ShortDigest(%q) = %q, want %q", in, got, want)
		}
	}
}
