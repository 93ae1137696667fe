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
// pull, merge and run, update, rollback; then the signed disk image chain:
// certificate and image policy in place on the node, a tampered and a
// foreign-signed image refused.
func TestNodeDemo(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	testenv.RequireRoot(t)
	testenv.RequireTool(t, "mksquashfs")
	testenv.RequireTool(t, "unshare")
	testenv.RequireTool(t, "systemd-sysext")
	testenv.RequireTool(t, "veritysetup")
	bin := testenv.BuildSysext(t)
	cmd := exec.Command("../scripts/node-demo.sh")
	cmd.Env = append(os.Environ(), "SYSEXT="+bin, "TMPDIR="+t.TempDir())
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "node-demo: OK") || !strings.Contains(string(out), "from the merged /usr: node-hello 2.0") {
		t.Fatalf("node-demo: %v\n%s", err, out)
	}
	for _, want := range []string{
		"signature:      valid over the root hash",
		"verity certificate CN=node-demo publisher installed",
		"ImagePolicy=root=signed+absent:usr=signed+absent",
		"refused: sysext: push tampered.raw: tampered.raw: the root and root-verity partitions: the dm-verity hash tree does not match the data",
		"which the policy does not name",
		"verity: a signed disk image here:",
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("node-demo does not show %q", want)
		}
	}
	// Steps 1-5 (the squashfs loop) are read by a person on a healthy host;
	// step 6 shows what this host cannot enforce for a disk image, warnings
	// included.
	loop := string(out)
	if i := strings.Index(loop, "==> 6."); i >= 0 {
		loop = loop[:i]
	}
	// What a person reads on a healthy host: no terminal escapes in a pipe,
	// no warning about a systemd version nothing here needs, a list that
	// fits 100 columns and says what unproven means.
	if strings.Contains(loop, "\x1b") {
		t.Errorf("ANSI escapes though the output is not a terminal:\n%q", out)
	}
	if strings.Contains(loop, "warning") {
		t.Errorf("a warning on a healthy host:\n%s", out)
	}
	list := loop[strings.LastIndex(loop, "list --root node"):]
	for _, l := range strings.Split(list, "\n") {
		if n := utf8.RuneCountInString(l); n > 100 {
			t.Errorf("list line of %d columns: %s", n, l)
		}
	}
	if !strings.Contains(list, "unproven: linked with --root") {
		t.Errorf("list does not explain unproven:\n%s", list)
	}
}
