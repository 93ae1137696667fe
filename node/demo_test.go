package node

import (
	"os"
	"os/exec"
	"strings"
	"testing"
	"unicode/utf8"

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
	// What a person reads on a healthy host: no terminal escapes in a pipe,
	// no warning about a systemd version nothing here needs, a list that
	// fits 100 columns and says what unproven means.
	if strings.Contains(string(out), "\x1b") {
		t.Errorf("ANSI escapes though the output is not a terminal:\n%q", out)
	}
	if strings.Contains(string(out), "warning") {
		t.Errorf("a warning on a healthy host:\n%s", out)
	}
	list := string(out[strings.LastIndex(string(out), "list --root node"):])
	for _, l := range strings.Split(list, "\n") {
		if n := utf8.RuneCountInString(l); n > 100 {
			t.Errorf("list line of %d columns: %s", n, l)
		}
	}
	if !strings.Contains(list, "unproven: linked with --root") {
		t.Errorf("list does not explain unproven:\n%s", list)
	}
}
