package fromimage

import (
	"testing"

	"golang.org/x/sys/unix"
)

// TestScratchParent: tmpfs with room is chosen; a disk directory, a size
// over the tmpfs's share, or no size fall back.
func TestScratchParent(t *testing.T) {
	var st unix.Statfs_t
	if unix.Statfs("/dev/shm", &st) != nil || st.Type != unix.TMPFS_MAGIC {
		t.Skip("no tmpfs at /dev/shm on this machine")
	}
	free := int64(st.Bavail) * st.Bsize
	if got := ScratchParent("/out", 1<<20); got != "/dev/shm" {
		t.Errorf("1 MiB of layers: %s, want /dev/shm", got)
	}
	if got := ScratchParent("/out", free); got != "/out" {
		t.Errorf("layers as big as the free space: %s, want the fallback", got)
	}
	if got := ScratchParent("/out", 0); got != "/out" {
		t.Errorf("no size: %s, want the fallback", got)
	}
	defer func(d string) { shmDir = d }(shmDir)
	shmDir = t.TempDir() // a disk filesystem here (or whatever TMPDIR is)
	var st2 unix.Statfs_t
	if unix.Statfs(shmDir, &st2) == nil && st2.Type != unix.TMPFS_MAGIC {
		if got := ScratchParent("/out", 1<<20); got != "/out" {
			t.Errorf("a disk directory: %s, want the fallback", got)
		}
	}
}
