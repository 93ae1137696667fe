package node

import (
	"embed"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/sysext/sysext/atomicfile"
	"github.com/sysext/sysext/extension"
	"github.com/sysext/sysext/internal/inroot"
)

//go:embed units/*.service units/*.timer
var unitFS embed.FS

// Units returns the systemd units sysext ships, by file name, with @BIN@
// replaced by bin.
func Units(bin string) (map[string][]byte, error) {
	ents, err := unitFS.ReadDir("units")
	if err != nil {
		return nil, err
	}
	out := map[string][]byte{}
	for _, e := range ents {
		b, err := unitFS.ReadFile("units/" + e.Name())
		if err != nil {
			return nil, err
		}
		out[e.Name()] = []byte(strings.ReplaceAll(string(b), "@BIN@", bin))
	}
	return out, nil
}

// enableLinks are the units install-units enables, by the target whose
// .wants directory links them.
var enableLinks = map[string]string{
	"sysext-update.timer":        "timers.target",
	"sysext-sync.service":        "sysinit.target",
	"sysext-sync-online.service": "multi-user.target",
}

// InstallUnits writes the units into unitDir under root (atomically) and,
// when enable is set, links them into their targets' .wants directories
// as `systemctl enable` would, without talking to systemd. It returns the
// paths written.
func InstallUnits(root, unitDir, bin string, enable bool) ([]string, error) {
	if !filepath.IsAbs(bin) {
		return nil, fmt.Errorf("--bin %s: give the absolute path of sysext on the target system", bin)
	}
	// bin becomes the command of ExecStart= lines.
	if err := extension.ValidateLinePath("--bin", bin); err != nil {
		return nil, err
	}
	if !filepath.IsAbs(unitDir) {
		return nil, fmt.Errorf("--unit-dir %s: give an absolute path as seen inside --root", unitDir)
	}
	units, err := Units(bin)
	if err != nil {
		return nil, err
	}
	// Inside the root: ROOT/etc -> /elsewhere must not reach the host.
	dir, err := inroot.Join(root, unitDir)
	if err != nil {
		return nil, fmt.Errorf("install units: %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("install units: %w", err)
	}
	var written []string
	for name, b := range units {
		p := filepath.Join(dir, name)
		if err := atomicfile.WriteFile(p, b, 0o644); err != nil {
			return written, fmt.Errorf("install units: %w", err)
		}
		written = append(written, p)
	}
	if !enable {
		return written, nil
	}
	for unit, target := range enableLinks {
		wants := filepath.Join(dir, target+".wants")
		if err := os.MkdirAll(wants, 0o755); err != nil {
			return written, fmt.Errorf("enable %s: %w", unit, err)
		}
		link := filepath.Join(wants, unit)
		if err := atomicfile.Symlink(filepath.Join(unitDir, unit), link); err != nil {
			return written, fmt.Errorf("enable %s: %w", unit, err)
		}
		written = append(written, link)
	}
	return written, nil
}
