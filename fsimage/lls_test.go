package fsimage

import (
	"io/fs"
	"testing"
)

func TestParseLLS(t *testing.T) {
	tests := []struct {
		line string
		path string
		mode fs.FileMode
		ok   bool
	}{
		{"-rw-r--r-- root/root                50 2026-11-22 03:08 /usr/lib/extension-release.d/extension-release.hello", "usr/lib/extension-release.d/extension-release.hello", 0, true},
		{"drwxr-xr-x root/root                37 2026-11-22 03:08 /usr", "usr", fs.ModeDir, true},
		{"lrwxrwxrwx root/root                 5 2026-11-22 03:08 /usr/lib/x -> ../y", "usr/lib/x", fs.ModeSymlink, true},
		{"-rw-r--r-- root/root                 1 2026-11-22 03:08 /usr/a file with spaces", "usr/a file with spaces", 0, true},
		{"drwxr-xr-x root/root                26 2026-11-22 03:08 ", "", 0, false},
		{"crw-r--r-- root/root             1,  3 2026-11-22 03:08 /usr/dev", "", 0, false},
		{"", "", 0, false},
		{"-rw-r--r-- garbage", "", 0, false},
	}
	for _, tt := range tests {
		p, m, ok := parseLLS(tt.line)
		if p != tt.path || m != tt.mode || ok != tt.ok {
			t.Errorf("parseLLS(%q) = %q, %v, %v; want %q, %v, %v", tt.line, p, m, ok, tt.path, tt.mode, tt.ok)
		}
	}
}
