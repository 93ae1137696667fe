package tool

import (
	"context"
	"errors"
	"strings"
	"testing"
)

func TestLookNamesThePackage(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	_, err := Look("mksquashfs")
	if !errors.Is(err, ErrMissing) || err.Error() != "mksquashfs is not installed: install it with 'apt-get install squashfs-tools'" {
		t.Fatalf("Look = %v", err)
	}
	if _, err := Look("nonexistent-tool"); !errors.Is(err, ErrMissing) {
		t.Fatalf("Look = %v", err)
	}
}

func TestRun(t *testing.T) {
	ctx := context.Background()
	out, err := Run(ctx, "sh", "-c", "printf hello")
	if err != nil || string(out) != "hello" {
		t.Fatalf("Run = %q, %v", out, err)
	}
	_, err = Run(ctx, "sh", "-c", "echo progress; echo '[====]'; echo 'disk full' >&2; exit 3")
	if err == nil || !strings.Contains(err.Error(), "sh failed: disk full") {
		t.Fatalf("failing tool: %v", err)
	}
	if _, err := RunLimit(ctx, 10, "sh", "-c", "yes"); err == nil || !strings.Contains(err.Error(), "more than the 10 bytes") {
		t.Fatalf("endless output: %v", err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := Run(cctx, "sh", "-c", "sleep 60"); err == nil {
		t.Fatal("cancelled run succeeded")
	}
}

func TestTailIsBounded(t *testing.T) {
	var tl Tail
	for i := 0; i < 10000; i++ {
		tl.Write([]byte("a long line of tool output\n"))
	}
	tl.Write([]byte("the last line\n\n"))
	if len(tl.String()) > 2*tailSize || tl.LastLine() != "the last line" {
		t.Fatalf("tail %d bytes, last line %q", len(tl.String()), tl.LastLine())
	}
}
