package node

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sysext/sysext/internal/testenv"
)

// The units load in the host's systemd without a warning (an unknown key,
// such as FixedRandomDelay= on a systemd that lacks it, would be one), and
// the update timer spreads a fleet: a randomized delay that each node
// keeps, not coalesced.
func TestUnitsVerify(t *testing.T) {
	analyze := testenv.RequireTool(t, "systemd-analyze")
	units, err := Units("/bin/true")
	must(t, err)
	dir := t.TempDir()
	var files []string
	for name, b := range units {
		p := filepath.Join(dir, name)
		must(t, os.WriteFile(p, b, 0o644))
		files = append(files, p)
	}
	out, err := exec.Command(analyze, append([]string{"verify", "--man=no"}, files...)...).CombinedOutput()
	if err != nil || len(out) > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
	timer := string(units["sysext-update.timer"])
	for _, want := range []string{"RandomizedDelaySec=2h\n", "FixedRandomDelay=true\n", "AccuracySec=1s\n", "Persistent=true\n"} {
		if !strings.Contains(timer, want) {
			t.Errorf("sysext-update.timer lacks %q", want)
		}
	}
}
