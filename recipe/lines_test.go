package recipe

import (
	"context"
	"strings"
	"testing"
)

// TestSystemdLinesNotInjected: a recipe field that becomes a line of a
// systemd file cannot add lines to it. A newline in configs[].path used to
// inject a tmpfiles.d rule (C /root/.ssh/authorized_keys ...) into the
// generated /usr/lib/tmpfiles.d/NAME.conf.
func TestSystemdLinesNotInjected(t *testing.T) {
	inject := `/etc/hello.conf\nC /root/.ssh/authorized_keys - - - - /usr/share/hello/keys`
	for _, tc := range []struct {
		name, add, field string
	}{
		{"newline in configs[].path", "configs:\n  - path: \"" + inject + "\"\n    content: x\n", "configs[0].path"},
		{"carriage return in configs[].path", "configs:\n  - path: \"/etc/hello.conf\\rC /root/.ssh/authorized_keys\"\n    content: x\n", "configs[0].path"},
		{"space in configs[].path", "configs:\n  - path: \"/etc/hello.conf /root/.ssh/authorized_keys\"\n    content: x\n", "configs[0].path"},
		{"specifier in configs[].path", "configs:\n  - path: \"/etc/%h/x\"\n    content: x\n", "configs[0].path"},
		{"carriage return in tmpfiles", "tmpfiles:\n  - \"d /run/hello 0755 root root -\\rC /root/.ssh/authorized_keys\"\n", "tmpfiles[0]"},
		{"newline in a unit name", "dropins:\n  - unit: \"hello.service\\nUpholds=evil.service\"\n    name: x.conf\n    content: x\n", "dropins[0].unit"},
		{"newline in a drop-in name", "dropins:\n  - unit: hello.service\n    name: \"x\\n.conf\"\n    content: x\n", "dropins[0].name"},
	} {
		_, err := Parse([]byte(goodRecipe+tc.add), "hello.yaml")
		if err == nil {
			t.Errorf("%s: accepted", tc.name)
			continue
		}
		if !strings.Contains(err.Error(), tc.field) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: %q, want one line naming %s", tc.name, err, tc.field)
		}
	}
}

// TestSysupdateAndButaneLines: the transfer file's Path= lines and the
// Butane unit's ExecStart= words refuse values that would break the line.
func TestSysupdateAndButaneLines(t *testing.T) {
	dir := t.TempDir()
	for _, o := range []SysupdateOptions{
		{Name: "hello", ImagesDir: dir, URL: "https://example.org/x\nVerify=no"},
		{Name: "hello", ImagesDir: dir, URL: "https://example.org/x", TargetDir: "/opt/x\n[Target]"},
		{Name: "hello", ImagesDir: dir, URL: "https://example.org/x", Link: "/etc/extensions/%a.raw"},
	} {
		if _, err := Sysupdate(context.Background(), o); err == nil || !strings.Contains(err.Error(), "sysupdate: --") {
			t.Errorf("Sysupdate(%+v): %v", o, err)
		}
	}
	for _, o := range []ButaneOptions{
		{Ref: "ghcr.io/acme/hello:1\nExecStartPost=/bin/evil"},
		{Ref: "ghcr.io/acme/hello:1", ExtraPullArg: []string{"--key", "/k.pub\nExecStartPost=/bin/evil"}},
		{Ref: "ghcr.io/acme/hello:%n"},
	} {
		if _, err := Butane(o); err == nil || !strings.Contains(err.Error(), "butane: ") {
			t.Errorf("Butane(%+v): %v", o, err)
		}
	}
}
