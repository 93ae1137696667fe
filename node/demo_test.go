package node

import (
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/sysext/sysext/internal/testenv"
)

// TestNodeDemo runs the README's node loop (scripts/node-demo.sh) with a
// freshly built sysext: build two versions, push signed to an OCI layout,
// pull, merge and run, update, rollback.
func TestNodeDemo(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	testenv.RequireRoot(t)
	testenv.RequireTool(t, "mksquashfs")
	testenv.RequireTool(t, "unshare")
	testenv.RequireTool(t, "systemd-sysext")
	bin := testenv.BuildSysext(t)
	cmd := exec.Command("../scripts/node-demo.sh")
	cmd.Env = append(os.Environ(), "SYSEXT="+bin, "TMPDIR="+t.TempDir())
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "node-demo: OK") || !strings.Contains(string(out), "from the merged /usr: node-hello 2.0") {
		t.Fatalf("node-demo: %v\n%s", err, out)
	}
}
