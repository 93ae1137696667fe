package deltabench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
)

// Program is one command-line program built from the Go module proxy.
type Program struct {
	Name    string // its file under usr/bin
	Module  string // the module path
	Package string // the package go install builds (Module or below it)
	Version string // a tagged version of Module
	// Completion says the program prints shell completions with
	// "completion bash|zsh|fish" (cobra programs).
	Completion bool
}

func (p Program) String() string { return p.Name + "@" + p.Version }

// Release is one version of the workload's extension: its version and the
// programs in it.
type Release struct {
	Name     string // the extension's NAME
	Version  string // SYSEXT_VERSION_ID
	Programs []Program
}

// ExtensionName is the workload extension's NAME.
const ExtensionName = "devtools"

// Unit is the service the workload enables (an Upholds= drop-in).
const Unit = "devtools-mirror.service"

func helm(v string) Program {
	return Program{Name: "helm", Module: "helm.sh/helm/v3", Package: "helm.sh/helm/v3/cmd/helm", Version: v, Completion: true}
}
func crane(v string) Program {
	return Program{Name: "crane", Module: "github.com/google/go-containerregistry", Package: "github.com/google/go-containerregistry/cmd/crane", Version: v, Completion: true}
}
func yq(v string) Program {
	return Program{Name: "yq", Module: "github.com/mikefarah/yq/v4", Package: "github.com/mikefarah/yq/v4", Version: v, Completion: true}
}
func shfmt(v string) Program {
	return Program{Name: "shfmt", Module: "mvdan.cc/sh/v3", Package: "mvdan.cc/sh/v3/cmd/shfmt", Version: v}
}

// Workload returns the releases issue 15's benchmark updates between:
// V1 and V2 are consecutive releases of the extension in which two of
// four programs (crane and yq) move to their next tagged version and two
// (helm, shfmt) stay; V0 is the release before V1 (the same two programs
// one version older), for the cost of deltas from older versions;
// VersionOnly is V1's content under a new version (only the
// extension-release file changes); Other is an unrelated extension that
// shares one program with V2 (a store's other extensions as a chunk
// source).
func Workload() (v0, v1, v2, versionOnly, other Release) {
	v0 = Release{ExtensionName, "0.9", []Program{helm("v3.21.4"), crane("v0.21.9"), yq("v4.54.1"), shfmt("v3.14.1")}}
	v1 = Release{ExtensionName, "1.0", []Program{helm("v3.21.4"), crane("v0.22.0"), yq("v4.54.2"), shfmt("v3.14.1")}}
	v2 = Release{ExtensionName, "1.1", []Program{helm("v3.21.4"), crane("v0.22.1"), yq("v4.54.3"), shfmt("v3.14.1")}}
	versionOnly = Release{ExtensionName, "1.0.1", v1.Programs}
	other = Release{"ocitools", "1.0", []Program{crane("v0.22.1")}}
	return
}

// goEnv is the environment of the go command for reproducible static
// builds that do not depend on the caller's module or settings.
func goEnv(gobin string) []string {
	var env []string
	for _, e := range os.Environ() {
		k, _, _ := strings.Cut(e, "=")
		switch k {
		case "GOFLAGS", "CGO_ENABLED", "GOBIN", "GOWORK", "GOOS", "GOARCH":
			continue
		}
		env = append(env, e)
	}
	return append(env, "CGO_ENABLED=0", "GOFLAGS=-trimpath -buildvcs=false", "GOWORK=off", "GOBIN="+gobin)
}

// Install builds p with go install (static, -trimpath, stripped, as
// release tooling builds) into cache/bin/NAME@VERSION/NAME once, and
// returns the binary's path. The toolchain must be the same for every
// build of a comparison: an unchanged program must give the same bytes.
func Install(ctx context.Context, cache string, p Program) (string, error) {
	dir := filepath.Join(cache, "bin", p.String())
	bin := filepath.Join(dir, p.Name)
	if _, err := os.Stat(bin); err == nil {
		return bin, nil
	}
	if err := os.MkdirAll(filepath.Join(cache, "bin"), 0o755); err != nil {
		return "", err
	}
	tmp, err := os.MkdirTemp(filepath.Join(cache, "bin"), ".install-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	cmd := exec.CommandContext(ctx, "go", "install", "-ldflags=-s -w", p.Package+"@"+p.Version)
	cmd.Dir = tmp
	cmd.Env = goEnv(tmp)
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go install %s@%s: %w\n%s", p.Package, p.Version, err, out)
	}
	ents, err := os.ReadDir(tmp)
	if err != nil {
		return "", err
	}
	if len(ents) != 1 {
		return "", fmt.Errorf("go install %s@%s wrote %d files, want 1", p.Package, p.Version, len(ents))
	}
	if err := os.Rename(filepath.Join(tmp, ents[0].Name()), filepath.Join(tmp, p.Name)); err != nil {
		return "", err
	}
	if err := os.Rename(tmp, dir); err != nil {
		return "", err
	}
	return bin, nil
}

// moduleDir returns the module cache directory of module@version,
// downloading it through the proxy when needed.
func moduleDir(ctx context.Context, module, version string) (string, error) {
	cmd := exec.CommandContext(ctx, "go", "mod", "download", "-json", module+"@"+version)
	cmd.Env = goEnv("")
	cmd.Dir = os.TempDir()
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("go mod download %s@%s: %w", module, version, err)
	}
	var m struct{ Dir, Error string }
	if err := json.Unmarshal(out, &m); err != nil {
		return "", fmt.Errorf("go mod download %s@%s: %w", module, version, err)
	}
	if m.Error != "" || m.Dir == "" {
		return "", fmt.Errorf("go mod download %s@%s: %s", module, version, m.Error)
	}
	return m.Dir, nil
}

// maxDocBytes bounds the documentation taken from one module.
const maxDocBytes = 4 << 20

// isDoc says whether a module file is documentation a package would ship:
// the top-level README, LICENSE, NOTICE, CHANGELOG and every Markdown file
// under docs/ or doc/.
func isDoc(rel string) bool {
	base := strings.ToUpper(filepath.Base(rel))
	if !strings.Contains(rel, "/") {
		for _, p := range []string{"README", "LICENSE", "NOTICE", "CHANGELOG", "COPYING"} {
			if strings.HasPrefix(base, p) {
				return true
			}
		}
		return false
	}
	return (strings.HasPrefix(rel, "docs/") || strings.HasPrefix(rel, "doc/")) && strings.HasSuffix(base, ".MD")
}

// BuildTree writes the extension tree of r into dir (which must not
// exist): the programs in usr/bin, each module's documentation under
// usr/share/doc/NAME, shell completions made by running the programs,
// and the unchanged units and configuration of the extension.
func BuildTree(ctx context.Context, cache, dir string, r Release) error {
	if _, err := os.Lstat(dir); err == nil {
		return fmt.Errorf("tree %s exists: remove it first", dir)
	}
	tmp := dir + ".tmp"
	if err := os.RemoveAll(tmp); err != nil {
		return err
	}
	if err := buildTree(ctx, cache, tmp, r); err != nil {
		os.RemoveAll(tmp)
		return err
	}
	return os.Rename(tmp, dir)
}

func buildTree(ctx context.Context, cache, dir string, r Release) error {
	for _, p := range r.Programs {
		bin, err := Install(ctx, cache, p)
		if err != nil {
			return err
		}
		if err := copyFile(bin, filepath.Join(dir, "usr/bin", p.Name), 0o755); err != nil {
			return err
		}
		mdir, err := moduleDir(ctx, p.Module, p.Version)
		if err != nil {
			return err
		}
		if err := copyDocs(mdir, filepath.Join(dir, "usr/share/doc", p.Name)); err != nil {
			return err
		}
		if p.Completion {
			for _, c := range []struct{ shell, path string }{
				{"bash", "usr/share/bash-completion/completions/" + p.Name},
				{"zsh", "usr/share/zsh/site-functions/_" + p.Name},
				{"fish", "usr/share/fish/vendor_completions.d/" + p.Name + ".fish"},
			} {
				cmd := exec.CommandContext(ctx, bin, "completion", c.shell)
				cmd.Env = []string{"HOME=/nonexistent", "PATH=/usr/bin:/bin"}
				out, err := cmd.Output()
				if err != nil {
					return fmt.Errorf("%s completion %s: %w", p.Name, c.shell, err)
				}
				if err := writeFile(filepath.Join(dir, c.path), out, 0o644); err != nil {
					return err
				}
			}
		}
	}
	for path, content := range staticFiles(r) {
		if err := writeFile(filepath.Join(dir, path), []byte(content), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// staticFiles are the extension's own files, the same in every release.
func staticFiles(r Release) map[string]string {
	var names []string
	for _, p := range r.Programs {
		names = append(names, p.Name)
	}
	sort.Strings(names)
	return map[string]string{
		"usr/lib/systemd/system/" + Unit: "[Unit]\nDescription=Mirror of the images the node runs\n" +
			"After=network-online.target\nWants=network-online.target\n\n[Service]\nType=simple\n" +
			"User=devtools\nStateDirectory=devtools\nExecStart=/usr/bin/crane registry serve --address 127.0.0.1:5001 --disk /var/lib/devtools\n" +
			"Restart=on-failure\nProtectSystem=strict\nProtectHome=yes\nPrivateTmp=yes\nNoNewPrivileges=yes\n",
		"usr/lib/systemd/system/devtools-gc.service": "[Unit]\nDescription=Prune the mirror\n\n[Service]\nType=oneshot\nUser=devtools\n" +
			"ExecStart=/usr/bin/crane gc 127.0.0.1:5001\n",
		"usr/lib/systemd/system/devtools-gc.timer": "[Unit]\nDescription=Prune the mirror weekly\n\n[Timer]\nOnCalendar=weekly\nPersistent=true\n\n[Install]\nWantedBy=timers.target\n",
		"usr/lib/sysusers.d/devtools.conf":         "u devtools - \"Mirror of the images the node runs\" /var/lib/devtools\n",
		"usr/lib/tmpfiles.d/devtools.conf":         "d /var/lib/devtools 0750 devtools devtools -\n",
		"usr/share/devtools/programs":              strings.Join(names, "\n") + "\n",
	}
}

func writeFile(path string, data []byte, mode fs.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, data, mode)
}

func copyFile(src, dst string, mode fs.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// copyDocs copies the module's documentation (isDoc), in name order, up to
// maxDocBytes.
func copyDocs(mdir, dst string) error {
	var files []string
	err := filepath.WalkDir(mdir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(mdir, p)
		if d.IsDir() {
			if rel != "." && (strings.HasPrefix(d.Name(), ".") || d.Name() == "testdata" || d.Name() == "vendor") {
				return filepath.SkipDir
			}
			return nil
		}
		if d.Type().IsRegular() && isDoc(filepath.ToSlash(rel)) {
			files = append(files, rel)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if len(files) == 0 {
		return errors.New("module " + mdir + " has no documentation")
	}
	sort.Strings(files)
	var total int64
	for _, rel := range files {
		data, err := os.ReadFile(filepath.Join(mdir, rel))
		if err != nil {
			return err
		}
		if total += int64(len(data)); total > maxDocBytes {
			break
		}
		if bytes.IndexByte(data, 0) >= 0 {
			continue // not text
		}
		if err := writeFile(filepath.Join(dst, rel), data, 0o644); err != nil {
			return err
		}
	}
	return nil
}
