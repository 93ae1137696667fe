package deltabench

import (
	"context"
	"fmt"
	"math/bits"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// ZstdVersion is the version line of the zstd CLI.
func ZstdVersion(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "zstd", "--version").Output()
	return strings.TrimSpace(string(out)), err
}

// windowLog is the --long window that covers n bytes (at least zstd's
// default long window, 2^27).
func windowLog(n int64) int {
	return max(27, bits.Len64(uint64(n-1)))
}

// Patch writes the `zstd -19 --long --patch-from=old new` delta to out
// and returns its size and how long zstd took. The window covers the
// larger file, as --patch-from needs to reach all of the reference; the
// node decompresses with the same --long.
func Patch(ctx context.Context, old, new, out string) (int64, time.Duration, error) {
	so, err := os.Stat(old)
	if err != nil {
		return 0, 0, err
	}
	sn, err := os.Stat(new)
	if err != nil {
		return 0, 0, err
	}
	args := []string{"-q", "-f", "-19", "--long=" + strconv.Itoa(windowLog(max(so.Size(), sn.Size()))), "--patch-from=" + old, new, "-o", out}
	start := time.Now()
	if b, err := exec.CommandContext(ctx, "zstd", args...).CombinedOutput(); err != nil {
		return 0, 0, fmt.Errorf("zstd %s: %w\n%s", strings.Join(args, " "), err, b)
	}
	took := time.Since(start)
	sp, err := os.Stat(out)
	if err != nil {
		return 0, 0, err
	}
	return sp.Size(), took, nil
}

// ApplyPatch rebuilds new from old and the patch into out, as a node
// would, and returns how long zstd took.
func ApplyPatch(ctx context.Context, old, patch, out string, size int64) (time.Duration, error) {
	args := []string{"-q", "-f", "-d", "--long=" + strconv.Itoa(windowLog(size)), "--patch-from=" + old, patch, "-o", out}
	start := time.Now()
	if b, err := exec.CommandContext(ctx, "zstd", args...).CombinedOutput(); err != nil {
		return 0, fmt.Errorf("zstd %s: %w\n%s", strings.Join(args, " "), err, b)
	}
	return time.Since(start), nil
}
