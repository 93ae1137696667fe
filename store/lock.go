package store

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// DefaultLockTimeout is how long a second sysext waits for the lock.
const DefaultLockTimeout = 30 * time.Second

// LockedError says that another process holds the store's lock.
type LockedError struct {
	Path   string
	Holder string // "pid 123 (sysext update --all) since 2026-..."; "" when unknown
	Waited time.Duration
}

func (e *LockedError) Error() string {
	who := e.Holder
	if who == "" {
		who = "another process"
	}
	return fmt.Sprintf("%s: held by %s; waited %s: let it finish, or retry later (use --lock-timeout to wait longer)", e.Path, who, e.Waited.Round(time.Millisecond))
}

// lock is a held flock.
type lock struct {
	f    *os.File
	path string
}

// acquireLock takes an exclusive flock on path (a file, created when
// missing, or a directory), polling until timeout. When writeHolder is set
// the file records who holds it, for the next process's error message.
func acquireLock(ctx context.Context, path string, timeout time.Duration, writeHolder bool) (*lock, error) {
	var f *os.File
	var err error
	if writeHolder {
		f, err = os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	} else {
		f, err = os.Open(path)
	}
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	start := time.Now()
	delay := 5 * time.Millisecond
	for {
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			break
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) && !errors.Is(err, syscall.EINTR) {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		waited := time.Since(start)
		if waited >= timeout {
			holder := ""
			if writeHolder {
				holder = readHolder(path)
			}
			f.Close()
			return nil, &LockedError{Path: path, Holder: holder, Waited: waited}
		}
		t := time.NewTimer(min(delay, timeout-waited))
		select {
		case <-ctx.Done():
			t.Stop()
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", path, ctx.Err())
		case <-t.C:
		}
		delay = min(delay*2, 200*time.Millisecond)
	}
	if writeHolder {
		info := fmt.Sprintf("pid=%d\ncommand=%s\nsince=%s\n", os.Getpid(), commandLine(), time.Now().UTC().Format(time.RFC3339))
		// Best effort: the lock is held either way; the text only helps people.
		if err := f.Truncate(0); err == nil {
			_, _ = f.WriteAt([]byte(info), 0)
		}
	}
	return &lock{f: f, path: path}, nil
}

func (l *lock) release() error {
	if l == nil || l.f == nil {
		return nil
	}
	// Closing the file drops the flock; the holder text is left, it is only
	// read while someone holds the lock.
	err := l.f.Close()
	l.f = nil
	return err
}

func commandLine() string {
	args := make([]string, len(os.Args))
	for i, a := range os.Args {
		if i == 0 {
			a = a[strings.LastIndex(a, "/")+1:]
		}
		args[i] = a
	}
	s := strings.Join(args, " ")
	if len(s) > 200 {
		s = s[:200] + "..."
	}
	return strings.Map(func(r rune) rune {
		if r < ' ' {
			return ' '
		}
		return r
	}, s)
}

func readHolder(path string) string {
	b, err := os.ReadFile(path)
	if err != nil || len(b) > 4096 {
		return ""
	}
	kv := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, "="); ok {
			kv[k] = v
		}
	}
	pid, err := strconv.Atoi(kv["pid"])
	if err != nil {
		return ""
	}
	return fmt.Sprintf("pid %d (%s) since %s", pid, kv["command"], kv["since"])
}
