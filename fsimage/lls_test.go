package fsimage

import (
	"io/fs"
	"reflect"
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

func TestParseLLN(t *testing.T) {
	tests := []struct {
		line string
		want fileMeta
		ok   bool
	}{
		{"-rwsr-xr-x 0/0                       2 2026-12-04 14:33 /usr/bin/su", fileMeta{path: "usr/bin/su", mode: 0o755 | fs.ModeSetuid}, true},
		{"-rwxr-sr-x 0/5                       2 2026-12-04 14:33 /usr/bin/wall", fileMeta{path: "usr/bin/wall", mode: 0o755 | fs.ModeSetgid, gid: 5}, true},
		{"-rwSr--r-- 1000/1000                 2 2026-12-04 14:33 /usr/a b", fileMeta{path: "usr/a b", mode: 0o644 | fs.ModeSetuid, uid: 1000, gid: 1000}, true},
		{"drwxrwxrwt 0/0                      26 2026-12-04 14:33 /usr/tmp", fileMeta{path: "usr/tmp", mode: fs.ModeDir | 0o777 | fs.ModeSticky}, true},
		{"crw-r--r-- 0/0                   1,  3 2026-12-04 14:33 /usr/lib/null", fileMeta{path: "usr/lib/null", mode: fs.ModeDevice | fs.ModeCharDevice | 0o644, rdev: 1<<8 | 3}, true},
		{"crw-r--r-- 0/0                 4336, 44 2026-12-04 14:38 /usr/big", fileMeta{path: "usr/big", mode: fs.ModeDevice | fs.ModeCharDevice | 0o644, rdev: 4336<<8 | 44}, true},
		{"brw-rw---- 0/6                   8,  0 2026-12-04 14:33 /usr/lib/sda", fileMeta{path: "usr/lib/sda", mode: fs.ModeDevice | 0o660, gid: 6, rdev: 8 << 8}, true},
		{"lrwxrwxrwx 0/0                       5 2026-12-04 14:33 /usr/x -> ../y", fileMeta{path: "usr/x", mode: fs.ModeSymlink | 0o777}, true},
		{"drwxr-xr-x 0/0                      26 2026-12-04 14:33 ", fileMeta{}, false},
		{"-rw-r--r-- root/root 2 2026-12-04 14:33 /usr/a", fileMeta{}, false},
		{"-rw-r--r-x- 0/0 2 2026-12-04 14:33 /usr/a", fileMeta{}, false},
		{"garbage", fileMeta{}, false},
	}
	for _, tt := range tests {
		got, ok := parseLLN(tt.line)
		if ok != tt.ok || (ok && !reflect.DeepEqual(got, tt.want)) {
			t.Errorf("parseLLN(%q) = %+v, %v; want %+v, %v", tt.line, got, ok, tt.want, tt.ok)
		}
	}
	if maj, min := decodeDev(4336<<8 | 44); maj != 240 || min != 300 {
		t.Errorf("decodeDev = %d:%d, want 240:300", maj, min)
	}
}
