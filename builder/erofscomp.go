package builder

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"

	"github.com/sysext/sysext/fsimage"
	"github.com/sysext/sysext/internal/tool"
)

// erofsProbed remembers, per mkfs.erofs path and compressor, what the
// probe found: a build, a bake or a test runs it once.
var erofsProbed sync.Map // path + "\x00" + alg -> error (nil: has it)

// erofsSays finds the line where mkfs.erofs names the compressor it lacks
// ("Cannot find a valid compressor lzma"), rather than its last one.
var erofsSays = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`(?m)^(?:<E> erofs:)?\s*(.*[Cc]ompressor.*)$`) })

var erofsVersion = sync.OnceValue(func() *regexp.Regexp {
	return regexp.MustCompile(`mkfs\.erofs (?:\(erofs-utils\) )?v?([0-9]+(?:\.[0-9]+)*)`)
})

// checkEROFSCompressor refuses, before any work, a compressor the
// mkfs.erofs at path was built without: erofs-utils before 1.6 has no
// lzma, and a build may leave any of lzma, deflate and zstd out. It asks
// the tool itself, by writing an empty image with the compressor, since
// the versions print their compressors in different places.
func checkEROFSCompressor(ctx context.Context, path, alg string) error {
	if alg == "lz4" || alg == "lz4hc" || alg == "none" {
		return nil // every erofs-utils has them
	}
	key := path + "\x00" + alg
	if v, ok := erofsProbed.Load(key); ok {
		err, _ := v.(error)
		return err
	}
	dir, err := os.MkdirTemp("", ".#sysext-erofs-probe-")
	if err != nil {
		return fmt.Errorf("probe mkfs.erofs for %s: %w", alg, err)
	}
	defer os.RemoveAll(dir)
	tree := filepath.Join(dir, "tree")
	if err := os.Mkdir(tree, 0o755); err != nil {
		return fmt.Errorf("probe mkfs.erofs for %s: %w", alg, err)
	}
	cmd, err := tool.Command(ctx, path, "-z"+alg, filepath.Join(dir, "probe.raw"), tree)
	if err != nil {
		return err
	}
	var out tool.Tail
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.Env = toolEnv()
	runErr := cmd.Run()
	if ctx.Err() != nil {
		return ctx.Err()
	}
	var probeErr error
	if runErr != nil {
		name := "mkfs.erofs"
		if m := erofsVersion().FindStringSubmatch(out.String()); m != nil {
			name += " " + m[1]
		}
		said := out.LastLine()
		if m := erofsSays().FindStringSubmatch(out.String()); m != nil {
			said = m[1]
		}
		probeErr = fmt.Errorf("--compression %s: %s (%s) cannot write %s EROFS images (it says: %s): install erofs-utils >= %s, or use --compression %s",
			alg, name, path, alg, strings.TrimSpace(said), fsimage.ErofsTools(alg), DefaultEROFSCompression)
	}
	erofsProbed.Store(key, probeErr)
	return probeErr
}
