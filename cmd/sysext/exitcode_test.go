package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/sysext/sysext/activate"
	"github.com/sysext/sysext/oci"
)

// badInputs has, for every command, a bad flag value and a bad reference
// (or, for commands that take none, a bad argument): each must exit 2 with
// one line that names what was wrong, print nothing on stdout and write
// nothing. TestEveryCommandRefusesBadInput fails when a command has no row.
// {{ROOT}}, {{TREE}} and {{OSR}} are replaced by a node root, the example
// tree and an os-release file.
var badInputs = map[string]struct {
	flag, ref []string
	flagWant  string // in the error line
	refWant   string
}{
	"bake": {
		flag: []string{"bake", "tailscale", "--version", "1.76.6", "--compression", "zstd:99"}, flagWant: "--compression zstd:99",
		ref: []string{"bake", "tailscale", "--version", "1.76.6", "--push", "http://localhost:5000/x:1"}, refWant: "drop the scheme",
	},
	"build": {
		flag: []string{"build", "{{TREE}}", "--name", "x", "--version", "1", "--compression", "zstd:99"}, flagWant: "--compression zstd:99",
		ref: []string{"build", "--from-image", "UPPER/Repo:tag", "--name", "x", "--version", "1"}, refWant: "docker.io/upper/repo:tag",
	},
	"butane": {
		flag: []string{"butane", "ghcr.io/acme/x:1", "--variant", "coreos"}, flagWant: "--variant",
		ref: []string{"butane", "http://localhost:5000/x:1"}, refWant: "drop the scheme",
	},
	"check": {
		flag: []string{"check", "--os-release", "{{ROOT}}/nonexistent", "--root", "{{ROOT}}"}, flagWant: "--os-release",
		ref: []string{"check", "--os-release", "{{OSR}}", "--root", "{{ROOT}}", "image.raw"}, refWant: "only taken with --preflight",
	},
	"completion": {
		flag: []string{"completion", "bash", "--no-descriptions=perhaps"}, flagWant: "--no-descriptions",
		ref: []string{"completion", "tcsh"}, refWant: `unknown command "tcsh"`,
	},
	"completion bash": {
		flag: []string{"completion", "bash", "--no-descriptions=perhaps"}, flagWant: "--no-descriptions",
		ref: []string{"completion", "bash", "extra"}, refWant: "extra",
	},
	"completion fish": {
		flag: []string{"completion", "fish", "--no-descriptions=perhaps"}, flagWant: "--no-descriptions",
		ref: []string{"completion", "fish", "extra"}, refWant: "extra",
	},
	"completion powershell": {
		flag: []string{"completion", "powershell", "--no-descriptions=perhaps"}, flagWant: "--no-descriptions",
		ref: []string{"completion", "powershell", "extra"}, refWant: "extra",
	},
	"completion zsh": {
		flag: []string{"completion", "zsh", "--no-descriptions=perhaps"}, flagWant: "--no-descriptions",
		ref: []string{"completion", "zsh", "extra"}, refWant: "extra",
	},
	"chunk-index": {
		flag: []string{"chunk-index", "localhost:5000/x:1", "--insecure=perhaps"}, flagWant: "--insecure",
		ref: []string{"chunk-index", "http://localhost:5000/x:1"}, refWant: "drop the scheme",
	},
	"copy": {
		flag: []string{"copy", "ghcr.io/a/b:1", "oci:{{ROOT}}/out:1", "--skip-referrers=perhaps"}, flagWant: "--skip-referrers",
		ref: []string{"copy", "http://localhost:5000/x:1", "oci:{{ROOT}}/out:1"}, refWant: "drop the scheme",
	},
	"fetch": {
		flag: []string{"fetch", "localhost:5000/x:1", "--platform", "pdp11"}, flagWant: "--platform",
		ref: []string{"fetch", "localhost:99999/x:1"}, refWant: `port "99999"`,
	},
	"flatwrap": {
		flag: []string{"flatwrap", "{{ROOT}}", "x", "/usr/bin/x", "--version", "1", "--etc", "sometimes"}, flagWant: "sometimes",
		ref: []string{"flatwrap", "{{ROOT}}", "../x", "/usr/bin/x", "--version", "1"}, refWant: `"../x"`,
	},
	"flix": {
		flag: []string{"flix", "{{ROOT}}", "x", "/usr/bin/x", "--version", "1", "--compression", "zstd:99"}, flagWant: "--compression zstd:99",
		ref: []string{"flix", "{{ROOT}}", "../x", "/usr/bin/x", "--version", "1"}, refWant: `"../x"`,
	},
	"gc": {
		flag: []string{"gc", "--keep", "0", "--root", "{{ROOT}}"}, flagWant: "--keep 0",
		ref: []string{"gc", "extra", "--root", "{{ROOT}}"}, refWant: "extra",
	},
	"generate-key-pair": {
		flag: []string{"generate-key-pair", "--output-key-prefix", ""}, flagWant: "--output-key-prefix",
		ref: []string{"generate-key-pair", "extra"}, refWant: "extra",
	},
	"inspect": {
		flag: []string{"inspect", "ghcr.io/a/b:1", "--os-release", "{{ROOT}}/nonexistent"}, flagWant: "--os-release",
		ref: []string{"inspect", "http://localhost:5000/x:1"}, refWant: "drop the scheme",
	},
	"install-units": {
		flag: []string{"install-units", "--root", "{{ROOT}}", "--no-enable=perhaps"}, flagWant: "--no-enable",
		ref: []string{"install-units", "extra"}, refWant: "extra",
	},
	"list": {
		flag: []string{"list", "--root", "{{ROOT}}", "--lock-timeout", "forever"}, flagWant: "--lock-timeout",
		ref: []string{"list", "extra", "--root", "{{ROOT}}"}, refWant: "extra",
	},
	"login": {
		flag: []string{"login", "localhost:5000", "--password-stdin"}, flagWant: "-u USER",
		ref: []string{"login", "http://localhost:5000", "-u", "me", "--password-stdin"}, refWant: "drop the scheme",
	},
	"logout": {
		flag: []string{"logout", "localhost:5000", "--user", "me"}, flagWant: "--user",
		ref: []string{"logout", "localhost:99999"}, refWant: `port "99999"`,
	},
	"pull": {
		flag: []string{"pull", "localhost:5000/x:1", "--root", "{{ROOT}}", "--name", "../x"}, flagWant: `"../x"`,
		ref: []string{"pull", "UPPER/Repo:tag", "--root", "{{ROOT}}"}, refWant: "docker.io/upper/repo:tag",
	},
	"push": {
		flag: []string{"push", "x.raw", "localhost:5000/x:1", "--annotation", "novalue"}, flagWant: "--annotation",
		ref: []string{"push", "x.raw", "http://localhost:5000/x:1"}, refWant: "drop the scheme",
	},
	"recipes": {
		flag: []string{"recipes", "--help=perhaps"}, flagWant: "--help",
		ref: []string{"recipes", "lst"}, refWant: `unknown command "lst"`,
	},
	"recipes list": {
		flag: []string{"recipes", "list", "--json=perhaps"}, flagWant: "--json",
		ref: []string{"recipes", "list", "extra"}, refWant: "extra",
	},
	"recipes show": {
		flag: []string{"recipes", "show", "docker", "--json"}, flagWant: "--json",
		ref: []string{"recipes", "show", "no-such-recipe"}, refWant: "no-such-recipe",
	},
	"remove": {
		flag: []string{"remove", "x", "--root", "{{ROOT}}", "--lock-timeout", "forever"}, flagWant: "--lock-timeout",
		ref: []string{"remove", "../x", "--root", "{{ROOT}}"}, refWant: `"../x"`,
	},
	"rollback": {
		flag: []string{"rollback", "x", "--root", "{{ROOT}}", "--lock-timeout", "forever"}, flagWant: "--lock-timeout",
		ref: []string{"rollback", "../x", "--root", "{{ROOT}}"}, refWant: `"../x"`,
	},
	"rootfs": {
		flag: []string{"rootfs", "docker.io/library/alpine:3.20", "{{ROOT}}/out", "--platform", "pdp11"}, flagWant: "--platform",
		ref: []string{"rootfs", "http://localhost:5000/x:1", "{{ROOT}}/out"}, refWant: "drop the scheme",
	},
	"sign": {
		flag: []string{"sign", "localhost:5000/x:1"}, flagWant: "--key",
		ref: []string{"sign", "localhost:99999/x:1", "--key", "{{ROOT}}/cosign.key"}, refWant: `port "99999"`,
	},
	"status": {
		flag: []string{"status", "--strict", "--root", "{{ROOT}}"}, flagWant: "--strict",
		ref: []string{"status", "image.raw", "--root", "{{ROOT}}"}, refWant: "only taken with --preflight",
	},
	"sync": {
		flag: []string{"sync", "--root", "{{ROOT}}", "--lock-timeout", "forever"}, flagWant: "--lock-timeout",
		ref: []string{"sync", "../x", "--root", "{{ROOT}}"}, refWant: `"../x"`,
	},
	"sysupdate": {
		flag: []string{"sysupdate", "x", "--url", "https://example.com/", "--dir", "{{ROOT}}", "--instances", "1"}, flagWant: "--instances 1",
		ref: []string{"sysupdate", "../x", "--url", "https://example.com/", "--dir", "{{ROOT}}"}, refWant: `"../x"`,
	},
	"update": {
		flag: []string{"update", "x", "--all", "--root", "{{ROOT}}"}, flagWant: "--all",
		ref: []string{"update", "../x", "--root", "{{ROOT}}"}, refWant: `"../x"`,
	},
	"verify": {
		flag: []string{"verify", "localhost:5000/x:1", "--certificate-identity-regexp", "(", "--certificate-oidc-issuer", "https://issuer"}, flagWant: "regexp",
		ref: []string{"verify", "UPPER/Repo:tag", "--key", "{{ROOT}}/cosign.pub"}, refWant: "docker.io/upper/repo:tag",
	},
	"version": {
		flag: []string{"version", "--short"}, flagWant: "--short",
		ref: []string{"version", "extra"}, refWant: "extra",
	},
}

// commandPaths lists every command of the tree but cobra's own help (and
// the hidden ones cobra adds).
func commandPaths(c *cobra.Command, prefix string) []string {
	var out []string
	for _, sub := range c.Commands() {
		if sub.Hidden || sub.Name() == "help" {
			continue
		}
		p := strings.TrimSpace(prefix + " " + sub.Name())
		out = append(out, p)
		out = append(out, commandPaths(sub, p)...)
	}
	return out
}

func TestEveryCommandRefusesBadInput(t *testing.T) {
	home := t.TempDir()
	t.Setenv("HOME", home)
	t.Setenv("DOCKER_CONFIG", filepath.Join(home, ".docker"))
	t.Setenv("XDG_CACHE_HOME", filepath.Join(home, ".cache"))
	t.Setenv("COSIGN_PASSWORD", "")
	tree := exampleTree(t)
	paths := commandPaths(newRootCommand(), "")
	sort.Strings(paths)
	for _, p := range paths {
		if _, ok := badInputs[p]; !ok {
			t.Errorf("command %q has no row in badInputs: give it a bad flag value and a bad reference", p)
		}
	}
	for _, p := range paths {
		row, ok := badInputs[p]
		if !ok {
			continue
		}
		for _, c := range []struct {
			kind string
			args []string
			want string
		}{{"bad flag value", row.flag, row.flagWant}, {"bad reference", row.ref, row.refWant}} {
			t.Run(p+"/"+c.kind, func(t *testing.T) {
				root := t.TempDir()
				osr := filepath.Join(t.TempDir(), "os-release")
				writeFile(t, osr, "ID=debian\nVERSION_ID=12\n")
				cwd := t.TempDir()
				t.Chdir(cwd)
				args := make([]string, len(c.args))
				for i, a := range c.args {
					a = strings.ReplaceAll(a, "{{ROOT}}", root)
					a = strings.ReplaceAll(a, "{{TREE}}", tree)
					args[i] = strings.ReplaceAll(a, "{{OSR}}", osr)
				}
				out, errs, code := runCLI(t, args...)
				if code != exitUsage {
					t.Fatalf("sysext %s: exit %d, want %d\n%s%s", strings.Join(args, " "), code, exitUsage, out, errs)
				}
				lines := strings.Split(strings.TrimSuffix(errs, "\n"), "\n")
				if len(lines) != 1 || !strings.HasPrefix(lines[0], "sysext: ") || !strings.Contains(lines[0], c.want) {
					t.Fatalf("sysext %s: want one line naming %q, got:\n%s", strings.Join(args, " "), c.want, errs)
				}
				if out != "" {
					t.Fatalf("sysext %s: printed on stdout: %q", strings.Join(args, " "), out)
				}
				for _, dir := range []string{cwd, root} {
					if ents, _ := os.ReadDir(dir); len(ents) != 0 {
						t.Fatalf("sysext %s: left %s in %s", strings.Join(args, " "), ents[0].Name(), dir)
					}
				}
			})
		}
	}
}

// TestEveryFlagRefusesAMalformedValue gives every typed flag (numbers,
// durations, booleans) of every command a value of the wrong type.
func TestEveryFlagRefusesAMalformedValue(t *testing.T) {
	root := newRootCommand()
	n := 0
	for _, p := range commandPaths(root, "") {
		c, _, err := root.Find(strings.Fields(p))
		if err != nil {
			t.Fatal(err)
		}
		c.Flags().VisitAll(func(f *pflag.Flag) {
			switch f.Value.Type() {
			case "bool", "int", "int64", "uint", "duration", "float64":
			default:
				return
			}
			n++
			args := append(strings.Fields(p), "--"+f.Name+"=not-a-value")
			_, errs, code := runCLI(t, args...)
			if code != exitUsage || !strings.Contains(errs, "--"+f.Name) || strings.Count(errs, "\n") != 1 {
				t.Errorf("sysext %s: exit %d, want 2 and one line naming the flag:\n%s", strings.Join(args, " "), code, errs)
			}
		})
	}
	if n < 50 {
		t.Fatalf("only %d typed flags found", n)
	}
}

// TestExitCodeMapping: the one mapping from errors to exit codes, on the
// libraries' typed errors however they are wrapped.
func TestExitCodeMapping(t *testing.T) {
	_, refErr := oci.ParseReference("http://localhost:5000/x:1")
	usage := fmt.Errorf("pull: %w", refErr)
	pre := fmt.Errorf("hello: preflight: %w", &activate.PreflightError{})
	for _, c := range []struct {
		err  error
		want int
	}{
		{nil, exitOK},
		{errors.New("boom"), exitFailure},
		{usage, exitUsage},
		{usageError("--x"), exitUsage},
		{nothingToDo("no extension is installed"), exitNothingToDo},
		{pre, exitPreflight},
		{withExit(exitDiffers, errors.New("differ")), exitDiffers},
		{errors.Join(pre, pre), exitPreflight},
		{errors.Join(pre, errors.New("boom")), exitFailure},
		{&countedError{n: 2, err: errors.Join(usage, usage)}, exitUsage},
		{&interrupted{sig: syscall.SIGINT}, 130},
		{&interrupted{sig: syscall.SIGTERM}, 143},
	} {
		if got := exitCode(c.err); got != c.want {
			t.Errorf("exitCode(%v) = %d, want %d", c.err, got, c.want)
		}
	}
}

// TestInterruptSaysWhatStopped: a command whose context is cancelled by a
// signal says which command stopped and that nothing changed, and exits
// 128+signal.
func TestInterruptSaysWhatStopped(t *testing.T) {
	ctx, cancel := context.WithCancelCause(context.Background())
	cancel(&interrupted{sig: syscall.SIGINT})
	root := t.TempDir()
	var out, errb bytes.Buffer
	code := run(ctx, []string{"sync", "--root", root}, strings.NewReader(""), &out, &errb)
	if code != 130 || !strings.Contains(errb.String(), "sysext sync interrupted by SIGINT (Ctrl-C)") || !strings.Contains(errb.String(), "nothing was changed") || strings.Contains(errb.String(), "context canceled") {
		t.Fatalf("exit %d\n%s", code, errb.String())
	}
}

// TestNothingToDo: update, sync, gc and check with nothing installed give
// the same exit code.
func TestNothingToDo(t *testing.T) {
	root := t.TempDir()
	writeFile(t, filepath.Join(root, "etc/os-release"), "ID=debian\nVERSION_ID=12\n")
	osr := filepath.Join(root, "etc/os-release")
	for _, args := range [][]string{
		{"update", "--all", "--root", root},
		{"sync", "--root", root},
		{"gc", "--root", root},
		{"check", "--os-release", osr, "--root", root},
	} {
		_, errs, code := runCLI(t, args...)
		if code != exitNothingToDo || !strings.HasPrefix(errs, "sysext: nothing to do: ") {
			t.Errorf("sysext %s: exit %d, want %d:\n%s", strings.Join(args, " "), code, exitNothingToDo, errs)
		}
	}
}
