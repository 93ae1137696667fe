package activate

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// Output of systemd-sysext 252 (Debian 12), captured on the CI machine.
const (
	status252JSON = `[{"hierarchy":"/opt","extensions":"none","since":null},{"hierarchy":"/usr","extensions":["hello","world"],"since":1795316994539066}]`
	status252Text = `HIERARCHY EXTENSIONS SINCE
/opt      none       -
/usr      hello      Sun 2026-11-22 03:09:54 UTC
          world      
`
	status252None = `[{"hierarchy":"/opt","extensions":"none","since":null},{"hierarchy":"/usr","extensions":"none","since":null}]`
)

func TestParseStatus(t *testing.T) {
	want := Merged{"/opt": nil, "/usr": {"hello", "world"}}
	m, err := ParseStatusJSON([]byte(status252JSON))
	if err != nil || !reflect.DeepEqual(m, want) {
		t.Errorf("JSON: %v %v", m, err)
	}
	m, err = ParseStatusText([]byte(status252Text))
	if err != nil || !reflect.DeepEqual(m, want) {
		t.Errorf("text: %v %v", m, err)
	}
	if m, err := ParseStatusJSON([]byte(status252None)); err != nil || len(m.Names()) != 0 || m.Has("hello") {
		t.Errorf("none: %v %v", m, err)
	}
	for _, bad := range []string{``, `{}`, `[{"hierarchy":"/usr","extensions":42}]`, `[{"extensions":[]}]`} {
		if _, err := ParseStatusJSON([]byte(bad)); err == nil {
			t.Errorf("JSON %q: no error", bad)
		}
	}
	for _, bad := range []string{``, "HIERARCHY EXTENSIONS SINCE\n", "   orphan\n", "usr hello\n"} {
		if _, err := ParseStatusText([]byte(bad)); err == nil {
			t.Errorf("text %q: no error", bad)
		}
	}
}

// fakeExec answers like systemd-sysext; a nil answer fails the command.
func fakeExec(answers map[string]string, failing map[string]string) func(ctx context.Context, name string, args ...string) ([]byte, []byte, error) {
	return func(ctx context.Context, name string, args ...string) ([]byte, []byte, error) {
		key := strings.Join(args, " ")
		if msg, ok := failing[key]; ok {
			return nil, []byte(msg), errors.New("exit status 1")
		}
		if out, ok := answers[key]; ok {
			return []byte(out), nil, nil
		}
		return nil, []byte("Unknown command verb " + key), errors.New("exit status 1")
	}
}

func TestSysextStatusFallsBackToText(t *testing.T) {
	sx := Sysext{Exec: fakeExec(map[string]string{"status --no-pager": status252Text}, nil)}
	m, err := sx.Status(context.Background())
	if err != nil || !m.Has("world") {
		t.Fatalf("%v %v", m, err)
	}
	sx = Sysext{Exec: fakeExec(nil, map[string]string{"status --no-pager": "Failed to open /run/systemd/sysext: Permission denied"})}
	_, err = sx.Status(context.Background())
	if err == nil || !strings.Contains(err.Error(), "Permission denied") {
		t.Errorf("want systemd's words, got %v", err)
	}
}

func TestRefreshKeepsSystemdWords(t *testing.T) {
	sx := Sysext{Exec: fakeExec(nil, map[string]string{"refresh": "Using extensions 'hello'.\nFailed to read metadata for image hello: Invalid argument\n"})}
	r := SysextRefresher{Sysext: sx}
	out, err := RefreshWith(r)(context.Background())
	if err == nil || !strings.Contains(err.Error(), "Failed to read metadata for image hello: Invalid argument") || strings.Contains(err.Error(), "Using extensions") {
		t.Errorf("error %v", err)
	}
	if !strings.Contains(out, "Invalid argument") {
		t.Errorf("output %q", out)
	}
	if c := Cause("Using extensions 'a'.\nMerged extensions into '/usr'.\n"); c != "" {
		t.Errorf("progress lines are no cause: %q", c)
	}
}

func TestProveFields(t *testing.T) {
	root := t.TempDir()
	rel := filepath.Join(root, "usr/lib/extension-release.d/extension-release.hello")
	must(t, os.MkdirAll(filepath.Dir(rel), 0o755))
	must(t, os.WriteFile(rel, []byte("ID=_any\nSYSEXT_VERSION_ID=1\n"), 0o644))
	p := Prover{Root: root, Sysext: Sysext{Exec: fakeExec(map[string]string{"status --json=short --no-pager": status252JSON}, nil)}}
	ctx := context.Background()
	if err := p.Prove(ctx, Expect{Name: "hello", Release: ReleaseDigest([]byte("ID=_any\nSYSEXT_VERSION_ID=1\n"))}); err != nil {
		t.Errorf("same bytes: %v", err)
	}
	err := p.Prove(ctx, Expect{Name: "hello", Version: "2", Release: ReleaseDigest([]byte("ID=_any\nSYSEXT_VERSION_ID=2\n"))})
	var pe *ProofError
	if !errors.As(err, &pe) || !strings.Contains(err.Error(), "another image's") {
		t.Errorf("other bytes: %v", err)
	}
	if err := p.Prove(ctx, Expect{Name: "world"}); err == nil || !strings.Contains(err.Error(), "has no") {
		t.Errorf("listed but no release file: %v", err)
	}
	if err := p.Prove(ctx, Expect{Name: "other"}); err == nil || !strings.Contains(err.Error(), "lists only hello, world") {
		t.Errorf("not listed: %v", err)
	}
	if err := p.Prove(ctx, Expect{Name: "hello", Absent: true}); err == nil || !strings.Contains(err.Error(), "still") {
		t.Errorf("absent: %v", err)
	}
	if err := p.Prove(ctx, Expect{Name: "../x"}); err == nil {
		t.Error("a bad name must be refused")
	}
}
