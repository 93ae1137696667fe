package smallfile

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
)

func TestRead(t *testing.T) {
	p := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(p, []byte("12345"), 0o644); err != nil {
		t.Fatal(err)
	}
	if b, err := Read(p, 5); err != nil || string(b) != "12345" {
		t.Fatalf("at the limit: %q %v", b, err)
	}
	_, err := Read(p, 4)
	var tl *TooLargeError
	if !errors.As(err, &tl) || tl.Path != p || tl.Limit != 4 || err.Error() != p+" is more than 4 bytes" {
		t.Fatalf("over the limit: %v", err)
	}
	if _, err := Read(filepath.Join(t.TempDir(), "missing"), 4); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("missing: %v", err)
	}
}

// An endless file stops at the limit instead of filling memory.
func TestReadEndless(t *testing.T) {
	if _, err := os.Stat("/dev/zero"); err != nil {
		t.Skip("no /dev/zero")
	}
	var tl *TooLargeError
	if _, err := Read("/dev/zero", 1<<10); !errors.As(err, &tl) {
		t.Fatalf("/dev/zero: %v", err)
	}
}
