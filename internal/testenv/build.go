package testenv

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// BuildSysext builds the sysext command (a static binary, CGO_ENABLED=0)
// into a temp dir and returns its path, for tests and benchmarks that run
// it as a separate process (scripts, peak RSS). tags are build tags (the
// hidden man page generator is built with "man"). It skips (fails in CI)
// without the go command.
func BuildSysext(t testing.TB, tags ...string) string {
	t.Helper()
	goTool := RequireTool(t, "go")
	bin := filepath.Join(t.TempDir(), "sysext")
	args := []string{"build", "-o", bin}
	if len(tags) > 0 {
		args = append(args, "-tags", strings.Join(tags, ","))
	}
	cmd := exec.Command(goTool, append(args, "github.com/sysext/sysext/cmd/sysext")...)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build sysext: %v\n%s", err, out)
	}
	return bin
}
