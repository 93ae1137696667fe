package activate

import (
	"bytes"
	"context"
	"debug/elf"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/sysext/sysext/internal/smallfile"
)

// Versions of systemd whose behaviour the checks depend on.
const (
	// SystemdReloadManager is the first systemd that honours
	// EXTENSION_RELOAD_MANAGER=1 (reloads the manager after a merge).
	SystemdReloadManager = 255
	// SystemdSafeRefresh is the first systemd whose `systemd-sysext refresh`
	// is safe to run directly; before it, restart systemd-sysext.service.
	SystemdSafeRefresh = 257
	// SystemdEROFSVerified is the oldest systemd we have seen merge an EROFS
	// extension (Debian 12's 252); older ones may not recognise the format.
	SystemdEROFSVerified = 252
)

// RefreshCommand is the command that makes systemd-sysext on a running
// system with the given systemd version merge the current set again:
// `systemd-sysext refresh` from 257 on, `systemctl restart
// systemd-sysext.service` before (so the merge runs in the service's
// context, as at boot). Version 0 (unknown) takes the older, safe form.
func RefreshCommand(systemdVersion int) []string {
	if systemdVersion >= SystemdSafeRefresh {
		return []string{"systemd-sysext", "refresh"}
	}
	return []string{"systemctl", "restart", "systemd-sysext.service"}
}

var sharedLibVersion = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^libsystemd-shared-([0-9]+)`) })

// systemdBinaries link libsystemd-shared-NNN.so by name (DT_NEEDED), so
// their dynamic section says the version too, wherever the library lives.
var systemdBinaries = []string{"usr/lib/systemd/systemd", "usr/bin/systemctl", "usr/bin/systemd-sysext", "lib/systemd/systemd", "bin/systemctl"}

// SystemdVersion finds the systemd version of the OS tree at root ("" or "/"
// for the running system) without running anything from it, the way
// systemd's own programs find it: they link libsystemd-shared-NNN.so, whose
// name carries the version. It looks for that library where distributions
// put it (Debian and Ubuntu under usr/lib/<multiarch triplet>/systemd,
// Fedora under usr/lib64/systemd, others under usr/lib/systemd), then in
// the dynamic section of systemd's binaries (usr/lib/systemd/systemd,
// systemctl, systemd-sysext), which name it even when the library sits
// elsewhere. It returns 0 and an error naming what it looked at when
// neither says.
func SystemdVersion(root string) (int, error) {
	if root == "" {
		root = "/"
	}
	var found []int
	for _, pattern := range []string{"usr/lib/systemd/libsystemd-shared-*.so", "usr/lib64/systemd/libsystemd-shared-*.so", "usr/lib/*/systemd/libsystemd-shared-*.so"} {
		matches, _ := filepath.Glob(filepath.Join(root, pattern))
		for _, m := range matches {
			if v := sharedLibVersion().FindStringSubmatch(filepath.Base(m)); v != nil {
				if n, err := strconv.Atoi(v[1]); err == nil {
					found = append(found, n)
				}
			}
		}
	}
	if len(found) == 0 {
		for _, b := range systemdBinaries {
			if n := linkedSystemdVersion(filepath.Join(root, b)); n > 0 {
				found = append(found, n)
			}
		}
	}
	if len(found) == 0 {
		return 0, fmt.Errorf("%s has no libsystemd-shared-NNN.so under usr/lib*/systemd and no systemd program (usr/lib/systemd/systemd, systemctl) that links one: cannot tell which systemd it has", root)
	}
	sort.Ints(found)
	return found[len(found)-1], nil
}

// linkedSystemdVersion reads the version from the libsystemd-shared-NNN.so
// an ELF program links (0 when it is not one, or links none). Only a
// regular file is read: a link in another root could point at the host's.
func linkedSystemdVersion(path string) int {
	fi, err := os.Lstat(path)
	if err != nil || !fi.Mode().IsRegular() {
		return 0
	}
	f, err := elf.Open(path)
	if err != nil {
		return 0
	}
	defer f.Close()
	libs, err := f.ImportedLibraries()
	if err != nil {
		return 0
	}
	for _, l := range libs {
		if v := sharedLibVersion().FindStringSubmatch(l); v != nil {
			if n, err := strconv.Atoi(v[1]); err == nil {
				return n
			}
		}
	}
	return 0
}

// Sysext runs the systemd-sysext program and reads what it says.
type Sysext struct {
	// Path is the program; "" means systemd-sysext on $PATH.
	Path string
	// Exec runs a command and returns its stdout and stderr; nil runs it
	// with os/exec. Tests replace it to inject faults.
	Exec func(ctx context.Context, name string, args ...string) (stdout, stderr []byte, err error)
}

func (s Sysext) run(ctx context.Context, args ...string) ([]byte, []byte, error) {
	path := s.Path
	if path == "" {
		path = "systemd-sysext"
	}
	if s.Exec != nil {
		return s.Exec(ctx, path, args...)
	}
	return execCommand(ctx, path, args...)
}

func execCommand(ctx context.Context, name string, args ...string) ([]byte, []byte, error) {
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	err := cmd.Run()
	return stdout.Bytes(), stderr.Bytes(), err
}

// Refresh runs `systemd-sysext refresh` and returns what it printed on
// stderr (systemd's reasons; kept even when it exits 0, because 252 exits 0
// after a failed overlay mount). Use it where RefreshCommand says it is
// safe, and in tests inside a private mount namespace.
func (s Sysext) Refresh(ctx context.Context) (string, error) {
	_, stderr, err := s.run(ctx, "refresh")
	msg := strings.TrimSpace(string(stderr))
	if err != nil {
		return msg, &SystemdError{Command: "systemd-sysext refresh", Output: msg, Err: err}
	}
	return msg, nil
}

// SystemdError is a systemd command that failed, with what it said.
type SystemdError struct {
	Command string
	Output  string // stderr, trimmed
	Err     error
}

func (e *SystemdError) Error() string {
	if s := Cause(e.Output); s != "" {
		return fmt.Sprintf("%s failed: %s", e.Command, s)
	}
	return fmt.Sprintf("%s: %v", e.Command, e.Err)
}

func (e *SystemdError) Unwrap() error { return e.Err }

// Cause picks systemd's reasons out of what it printed: the lines that say
// something failed or was ignored, not the progress lines ("Using
// extensions", "Merged extensions into", "Unmerged").
func Cause(output string) string {
	var keep []string
	for _, l := range strings.Split(output, "\n") {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "Using extensions") || strings.HasPrefix(l, "Merged extensions") ||
			strings.HasPrefix(l, "Unmerged") || strings.HasPrefix(l, "No extensions found") {
			continue
		}
		keep = append(keep, strings.TrimSuffix(l, "."))
	}
	return strings.Join(keep, "; ")
}

// Merged is what systemd-sysext says is merged now: extension names per
// hierarchy ("/usr", "/opt").
type Merged map[string][]string

// Has reports whether the extension is merged into any hierarchy.
func (m Merged) Has(name string) bool {
	for _, names := range m {
		for _, n := range names {
			if n == name {
				return true
			}
		}
	}
	return false
}

// Names lists every merged extension once, sorted.
func (m Merged) Names() []string {
	seen := map[string]bool{}
	var out []string
	for _, names := range m {
		for _, n := range names {
			if !seen[n] {
				seen[n] = true
				out = append(out, n)
			}
		}
	}
	sort.Strings(out)
	return out
}

// Status asks systemd-sysext what is merged now: `status --json=short`
// (systemd 252 has it), and the table when the JSON is refused or cannot be
// read.
func (s Sysext) Status(ctx context.Context) (Merged, error) {
	stdout, _, err := s.run(ctx, "status", "--json=short", "--no-pager")
	if err == nil {
		if m, jerr := ParseStatusJSON(stdout); jerr == nil {
			return m, nil
		}
	}
	stdout, stderr, err := s.run(ctx, "status", "--no-pager")
	if err != nil {
		return nil, &SystemdError{Command: "systemd-sysext status", Output: strings.TrimSpace(string(stderr)), Err: err}
	}
	m, err := ParseStatusText(stdout)
	if err != nil {
		return nil, fmt.Errorf("systemd-sysext status: %w", err)
	}
	return m, nil
}

// ParseStatusJSON reads `systemd-sysext status --json=short`: a list of
// {"hierarchy", "extensions", "since"} where extensions is a list of names
// or the string "none".
func ParseStatusJSON(data []byte) (Merged, error) {
	var rows []struct {
		Hierarchy  string          `json:"hierarchy"`
		Extensions json.RawMessage `json:"extensions"`
	}
	if err := json.Unmarshal(data, &rows); err != nil {
		return nil, fmt.Errorf("status JSON: %w", err)
	}
	m := Merged{}
	for _, r := range rows {
		if r.Hierarchy == "" {
			return nil, errors.New("status JSON: a row without a hierarchy")
		}
		var names []string
		if err := json.Unmarshal(r.Extensions, &names); err != nil {
			var none string
			if json.Unmarshal(r.Extensions, &none) != nil || none != "none" {
				return nil, fmt.Errorf("status JSON: hierarchy %s: extensions is neither a list nor \"none\"", r.Hierarchy)
			}
		}
		m[r.Hierarchy] = names
	}
	return m, nil
}

// ParseStatusText reads the table `systemd-sysext status` prints:
//
//	HIERARCHY EXTENSIONS SINCE
//	/opt      none       -
//	/usr      hello      Sun 2026-11-22 03:09:54 UTC
//	          world
//
// A row that starts with blanks continues the hierarchy above it.
func ParseStatusText(data []byte) (Merged, error) {
	m := Merged{}
	current := ""
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || f[0] == "HIERARCHY" {
			continue
		}
		if line[0] == ' ' || line[0] == '\t' {
			if current == "" {
				return nil, fmt.Errorf("status table: %q continues no hierarchy", line)
			}
			m[current] = append(m[current], f[0])
			continue
		}
		if !strings.HasPrefix(f[0], "/") || len(f) < 2 {
			return nil, fmt.Errorf("status table: unexpected line %q", line)
		}
		current = f[0]
		if f[1] == "none" {
			m[current] = nil
		} else {
			m[current] = append(m[current], f[1])
		}
	}
	if len(m) == 0 {
		return nil, errors.New("status table: no hierarchy listed")
	}
	return m, nil
}

// readFileLimited reads a small file (release files, /proc files).
var readFileLimited = smallfile.Read

// OutputRefresher is a refresher that also returns what systemd printed,
// when it succeeded too: systemd 252 exits 0 after a failed overlay mount,
// and its words are then the only cause a failed proof can give.
type OutputRefresher interface {
	RefreshOutput(ctx context.Context) (string, error)
}

// SysextRefresher runs `systemd-sysext refresh`. It has the node's
// Refresher method (Refresh(ctx) error) and RefreshOutput. Use it where
// RefreshCommand says `systemd-sysext refresh` is safe, and in tests inside
// a private mount namespace.
type SysextRefresher struct {
	Sysext Sysext
}

// Refresh runs systemd-sysext refresh.
func (r SysextRefresher) Refresh(ctx context.Context) error {
	_, err := r.Sysext.Refresh(ctx)
	return err
}

// RefreshOutput runs systemd-sysext refresh and returns what it printed on
// stderr.
func (r SysextRefresher) RefreshOutput(ctx context.Context) (string, error) {
	return r.Sysext.Refresh(ctx)
}

// RefreshWith adapts a refresher with the node's shape (Refresh(ctx) error)
// to Driver.Refresh. Systemd's words are kept for the reason: all it
// printed when the refresher is an OutputRefresher, else a *SystemdError's
// output.
func RefreshWith(r interface {
	Refresh(context.Context) error
}) func(context.Context) (string, error) {
	if o, ok := r.(OutputRefresher); ok {
		return o.RefreshOutput
	}
	return func(ctx context.Context) (string, error) {
		err := r.Refresh(ctx)
		var se *SystemdError
		if errors.As(err, &se) {
			return se.Output, err
		}
		return "", err
	}
}
