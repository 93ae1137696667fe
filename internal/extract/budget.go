package extract

import (
	"errors"
	"fmt"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// ErrTooLarge is wrapped when an extraction would write more than its
// Budget allows.
var ErrTooLarge = errors.New("too large")

// Budget bounds the bytes of file content an extraction writes: the size
// of every regular file as its entry gives it, holes included, since every
// later step (mksquashfs, mkfs.erofs, a copy) reads a file whole. A sparse
// entry still takes no room on disk (see writeSparse). Several Appliers,
// and the caller itself (Take), may share one Budget.
type Budget struct {
	mu    sync.Mutex
	limit int64
	used  int64
	free  string // the directory whose free space set the limit; "" = set by the user
}

// NewBudget returns a Budget of limit bytes, when the user chose it
// (--max-size); when limit is 0, one derived from the free space of the
// filesystem holding dir: half of it on tmpfs (memory), nine tenths
// elsewhere, so that an archive that unpacks to more fails cleanly before
// it fills the disk or the memory for everyone else.
func NewBudget(limit int64, dir string) (*Budget, error) {
	if limit < 0 {
		return nil, fmt.Errorf("a size limit of %d bytes: give a positive size", limit)
	}
	if limit > 0 {
		return &Budget{limit: limit}, nil
	}
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return nil, fmt.Errorf("free space of %s: %w", dir, err)
	}
	free := int64(st.Bavail) * int64(st.Bsize)
	if st.Type == unix.TMPFS_MAGIC {
		free /= 2
	} else {
		free -= free / 10
	}
	return &Budget{limit: free, free: dir}, nil
}

// Limit is the number of bytes the Budget allows in all.
func (b *Budget) Limit() int64 { return b.limit }

// Take accounts for n more bytes, or fails with a *SizeError (and
// accounts for nothing) when they do not fit. A nil Budget allows
// everything.
func (b *Budget) Take(n int64) error { return b.take(n) }

func (b *Budget) take(n int64) error {
	if b == nil {
		return nil
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if n < 0 || n > b.limit-b.used {
		return &SizeError{Limit: b.limit, FreeSpaceOf: b.free}
	}
	b.used += n
	return nil
}

// SizeError says that an extraction would exceed its Budget.
type SizeError struct {
	Limit       int64
	FreeSpaceOf string // set when the limit came from this directory's free space
}

func (e *SizeError) Error() string {
	if e.FreeSpaceOf != "" {
		return fmt.Sprintf("the extracted files would take more than %s, the share of the free space in %s an extraction may use: make room, or set the limit with --max-size", SizeString(e.Limit), e.FreeSpaceOf)
	}
	return fmt.Sprintf("the extracted files would be larger than --max-size %s: refused", SizeString(e.Limit))
}

// Is makes a SizeError match ErrTooLarge, and, when the limit came from
// the free space, ENOSPC: the caller may try again where there is more.
func (e *SizeError) Is(target error) bool {
	return target == ErrTooLarge || e.FreeSpaceOf != "" && target == syscall.ENOSPC
}

// SizeString formats n bytes for people (binary units).
func SizeString(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
