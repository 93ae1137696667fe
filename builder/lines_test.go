package builder

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestEnableWritesOneUpholdsLine: a unit to enable becomes an Upholds= line
// of a drop-in; a name systemd would expand (%i) or that is not a unit name
// is refused even when the tree has such a file.
func TestEnableWritesOneUpholdsLine(t *testing.T) {
	tree := t.TempDir()
	dir := filepath.Join(tree, "usr/lib/systemd/system")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, u := range []string{"hello.service", "hello%i.service", "hellö.service"} {
		if err := os.WriteFile(filepath.Join(dir, u), []byte("[Service]\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	drops, err := dropIns(tree, "hello", []string{"hello.service"})
	if err != nil || len(drops) != 1 || strings.Count(string(drops[0].content), "Upholds=") != 1 {
		t.Fatalf("hello.service: %v %+v", err, drops)
	}
	for _, u := range []string{"hello%i.service", "hellö.service", "hello.service\nUpholds=evil.service"} {
		if _, err := dropIns(tree, "hello", []string{u}); err == nil || !strings.Contains(err.Error(), "unit name") {
			t.Errorf("--enable %q: %v", u, err)
		}
	}
}
