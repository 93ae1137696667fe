package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/sysext/sysext/internal/testenv"
)

// TestManPages: sysext(1), a page for every command and the section 5
// pages are written by the generator built with -tags man (as make man
// builds it), man renders each without a warning, and the pages are the
// same bytes for the same SOURCE_DATE_EPOCH.
func TestManPages(t *testing.T) {
	man := testenv.RequireTool(t, "man")
	bin := testenv.BuildSysext(t, "man")
	t.Setenv("SOURCE_DATE_EPOCH", "1700000000")
	dir := t.TempDir()
	out, err := exec.Command(bin, "man", dir).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "manual pages") {
		t.Fatalf("sysext man: %v %s", err, out)
	}
	root := newRootCommand()
	want := map[string]string{filepath.Join(dir, "man1", "sysext.1"): root.Short}
	for _, p := range commandPaths(root, "") {
		c, _, err := root.Find(strings.Fields(p))
		if err != nil {
			t.Fatal(err)
		}
		want[filepath.Join(dir, "man1", "sysext-"+strings.ReplaceAll(p, " ", "-")+".1")] = c.Short
	}
	want[filepath.Join(dir, "man5", "sysext-policy.json.5")] = "which signatures sysext trusts"
	want[filepath.Join(dir, "man5", "sysext-extensions.d.5")] = "the system extensions a node declares"
	want[filepath.Join(dir, "man5", "sysext-registries.conf.5")] = "registry mirrors and locations a node pulls extensions through"
	if len(want) < 35 {
		t.Fatalf("only %d pages expected: the command tree is not what it was", len(want))
	}
	for page, short := range want {
		cmd := exec.Command(man, "-l", "--warnings", page)
		cmd.Env = append(os.Environ(), "MANWIDTH=100", "MANPAGER=cat", "PAGER=cat")
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil || stderr.Len() > 0 {
			t.Errorf("man -l %s: %v\n%s", page, err, stderr.String())
			continue
		}
		// Undo man's justification, hyphenation and typographic quotes.
		text := regexp.MustCompile(`\x{2010}\s+`).ReplaceAllString(stdout.String(), "")
		text = strings.NewReplacer("\u2019", "'", "\u2018", "'").Replace(text)
		text = strings.Join(strings.Fields(text), " ")
		if !strings.Contains(text, "NAME") || !strings.Contains(text, short) {
			t.Errorf("%s does not render its name and %q:\n%s", page, short, stdout.String())
		}
		if strings.HasSuffix(page, ".1") && !strings.Contains(text, "130 interrupted") {
			t.Errorf("%s has no exit status table", page)
		}
	}
	// Markdown did not eat the help: the exit table stays a table, '*'
	// and '<hex>' stay.
	b, _ := exec.Command(man, "-l", filepath.Join(dir, "man1", "sysext-sync.1")).Output()
	if !strings.Contains(string(b), "extensions.d/*.conf") || !strings.Contains(string(b), "\n         3    nothing to do") {
		t.Errorf("sysext-sync(1) lost its text:\n%s", b)
	}
	b, _ = exec.Command(man, "-l", filepath.Join(dir, "man1", "sysext-verify.1")).Output()
	if !strings.Contains(string(b), "sha256-<hex>.sig") {
		t.Errorf("sysext-verify(1) lost <hex>:\n%s", b)
	}

	again := t.TempDir()
	if out, err := exec.Command(bin, "man", again).CombinedOutput(); err != nil {
		t.Fatalf("sysext man: %v %s", err, out)
	}
	for page := range want {
		a, _ := os.ReadFile(page)
		b, _ := os.ReadFile(filepath.Join(again, strings.TrimPrefix(page, dir)))
		if !bytes.Equal(a, b) {
			t.Errorf("%s differs between two runs", page)
		}
	}
}
