package tool

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"time"
)

// Packages maps each tool to the Debian package that ships it.
var Packages = map[string]string{
	"mksquashfs": "squashfs-tools",
	"unsquashfs": "squashfs-tools",
	"mkfs.erofs": "erofs-utils",
	"fsck.erofs": "erofs-utils",
	"dump.erofs": "erofs-utils",
	// For disk images (DDIs).
	"veritysetup":    "cryptsetup-bin",
	"systemd-repart": "systemd-repart",
}

// ErrMissing is wrapped by Look's error.
var ErrMissing = errors.New("is not installed")

// Look returns the tool's path, or an error that says which package to
// install.
func Look(name string) (string, error) {
	p, err := exec.LookPath(name)
	if err != nil {
		if pkg, ok := Packages[name]; ok {
			return "", fmt.Errorf("%s %w: install it with 'apt-get install %s'", name, ErrMissing, pkg)
		}
		return "", fmt.Errorf("%s %w", name, ErrMissing)
	}
	return p, nil
}

// Command prepares name with args so that cancelling ctx stops it: SIGTERM
// first, SIGKILL after a grace period.
func Command(ctx context.Context, name string, args ...string) (*exec.Cmd, error) {
	p, err := Look(name)
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, p, args...)
	cmd.Cancel = func() error { return cmd.Process.Signal(terminate) }
	cmd.WaitDelay = 5 * time.Second
	return cmd, nil
}

// Run runs the tool and returns its standard output. A failure carries the
// tail of its standard error.
func Run(ctx context.Context, name string, args ...string) ([]byte, error) {
	return RunLimit(ctx, -1, name, args...)
}

// RunLimit is Run refusing more than limit bytes of output (limit < 0: no
// limit); the tool is stopped as soon as it prints more.
func RunLimit(ctx context.Context, limit int64, name string, args ...string) ([]byte, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	cmd, err := Command(ctx, name, args...)
	if err != nil {
		return nil, err
	}
	var stderr Tail
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	var r io.Reader = stdout
	if limit >= 0 {
		r = io.LimitReader(stdout, limit+1)
	}
	out, rerr := io.ReadAll(r)
	tooMuch := limit >= 0 && int64(len(out)) > limit
	if tooMuch {
		cancel()
		stdout.Close() // a writer that outlives the signal gets SIGPIPE
	}
	werr := cmd.Wait()
	switch {
	case tooMuch:
		return nil, fmt.Errorf("%s printed more than the %d bytes allowed", name, limit)
	case ctx.Err() != nil:
		return nil, ctx.Err()
	case werr != nil:
		return nil, Failed(name, werr, &stderr)
	case rerr != nil:
		return nil, fmt.Errorf("%s: %w", name, rerr)
	}
	return out, nil
}

// Failed makes the error for a tool that exited badly, with the last line
// of what it printed.
func Failed(name string, err error, output *Tail) error {
	if msg := output.LastLine(); msg != "" {
		return fmt.Errorf("%s failed: %s (%w)", name, msg, err)
	}
	return fmt.Errorf("%s failed: %w", name, err)
}

// Tail keeps the last few KiB written to it: enough for an error message,
// bounded however much a tool prints.
type Tail struct {
	buf []byte
}

const tailSize = 4 << 10

func (t *Tail) Write(p []byte) (int, error) {
	t.buf = append(t.buf, p...)
	if len(t.buf) > 2*tailSize {
		t.buf = append([]byte(nil), t.buf[len(t.buf)-tailSize:]...)
	}
	return len(p), nil
}

// String returns what was kept.
func (t *Tail) String() string { return string(t.buf) }

// LastLine returns the last non-empty line, without progress-bar noise.
func (t *Tail) LastLine() string {
	lines := strings.FieldsFunc(string(bytes.TrimSpace(t.buf)), func(r rune) bool { return r == '\n' || r == '\r' })
	for i := len(lines) - 1; i >= 0; i-- {
		l := strings.TrimSpace(lines[i])
		if l != "" && !strings.HasPrefix(l, "[") {
			return l
		}
	}
	return ""
}
