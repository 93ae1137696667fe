package activate

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/sysext/sysext/extension"
	"github.com/sysext/sysext/fsimage"
)

// KernelFacts is what the running kernel says about itself for EROFS
// compressors: its release, and its build configuration when the system
// publishes it (/proc/config.gz, /boot/config-RELEASE).
type KernelFacts struct {
	Release string
	// Config maps CONFIG_ names to their value ("y", "m"; absent or "n"
	// when not set); nil when no configuration could be read.
	Config     map[string]string
	ConfigPath string
}

// gatherKernel reads the running kernel's release and configuration.
// Nothing here is fatal: without them the check is skipped.
func gatherKernel(sys System) KernelFacts {
	var k KernelFacts
	if sys.KernelRelease != "" {
		k.Release = sys.KernelRelease
	} else if rel, err := kernelRelease(); err == nil {
		k.Release = rel
	}
	paths := []string{sys.KernelConfig}
	if sys.KernelConfig == "" {
		paths = []string{"/proc/config.gz"}
		if k.Release != "" && !strings.ContainsRune(k.Release, '/') {
			paths = append(paths, filepath.Join("/boot", "config-"+k.Release))
		}
	}
	for _, p := range paths {
		if cfg, err := readKernelConfig(p); err == nil {
			k.Config, k.ConfigPath = cfg, p
			break
		}
	}
	return k
}

// readKernelConfig parses a kernel .config, gzip-compressed or not,
// reading at most 16 MiB of it.
func readKernelConfig(path string) (map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var r io.Reader = f
	if strings.HasSuffix(path, ".gz") {
		zr, err := gzip.NewReader(f)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		r = zr
	}
	data, err := io.ReadAll(io.LimitReader(r, 16<<20))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	cfg := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), "="); ok && strings.HasPrefix(k, "CONFIG_") {
			cfg[k] = v
		}
	}
	if len(cfg) == 0 {
		return nil, fmt.Errorf("%s holds no CONFIG_ lines", path)
	}
	return cfg, nil
}

// erofsCompressorFindings judges whether the kernel reads the compressors
// of an EROFS image (from the manifest's annotation before a download,
// from the superblock for a file). A kernel configuration that leaves one
// out refuses; without a configuration, a release older than the one that
// brought the compressor warns (distribution kernels backport).
func erofsCompressorFindings(k KernelFacts, img Image, name string, add func(check string, sev Severity, ext, cause, fix string)) {
	if img.Format != fsimage.EROFS {
		return
	}
	for _, alg := range img.Compression {
		if alg == "none" {
			continue
		}
		var linux, config string
		for _, a := range fsimage.ErofsAlgorithms {
			if a.Name == alg {
				linux, config = a.Linux, a.Config
			}
		}
		fix := "boot a kernel with " + config + " (Linux >= " + linux + "), or use a build with --compression lz4hc or --format squashfs"
		switch {
		case config == "":
			add(CheckFilesystem, Warn, name, fmt.Sprintf("the image uses the EROFS compressor %.40q, which sysext does not know", alg), "the merge is still proven after the refresh")
		case k.Config != nil && k.Config["CONFIG_EROFS_FS"] != "" && k.Config[config] != "y":
			add(CheckFilesystem, Refuse, name, fmt.Sprintf("the kernel cannot read %s EROFS images: %s is not set in %s", alg, config, k.ConfigPath), fix)
		case k.Config == nil && k.Release != "" && extension.CompareVersions(k.Release, linux) < 0:
			add(CheckFilesystem, Warn, name, fmt.Sprintf("%s EROFS images need Linux >= %s with %s, the kernel is %s: the merge will likely fail", alg, linux, config, k.Release), fix)
		}
	}
}
