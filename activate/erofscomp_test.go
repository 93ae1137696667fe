package activate

import (
	"bytes"
	"compress/gzip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sysext/sysext/fsimage"
)

const erofsConfig = "CONFIG_EROFS_FS=m\nCONFIG_EROFS_FS_ZIP=y\nCONFIG_EROFS_FS_ZIP_LZMA=y\n# CONFIG_EROFS_FS_ZIP_DEFLATE is not set\n"

// A kernel whose configuration leaves out an image's EROFS compressor is
// refused before anything is touched; without a configuration, only a
// release older than the compressor warns.
func TestPreflightEROFSCompressor(t *testing.T) {
	img := func(algs ...string) Image {
		return Image{Name: "tools", Format: fsimage.EROFS, Compression: algs}
	}
	cfg, err := readKernelConfig(writeConfig(t, "config", erofsConfig))
	if err != nil {
		t.Fatal(err)
	}
	withConfig := KernelFacts{Release: "6.12.0", Config: cfg, ConfigPath: "/boot/config-6.12.0"}
	for _, c := range []struct {
		what   string
		kernel KernelFacts
		image  Image
		sev    Severity // "" for no finding
		want   string
	}{
		{"lzma configured", withConfig, img("lzma"), "", ""},
		{"lz4 configured", withConfig, img("lz4"), "", ""},
		{"uncompressed", withConfig, img("none"), "", ""},
		{"deflate not set", withConfig, img("deflate"), Refuse, "the kernel cannot read deflate EROFS images: CONFIG_EROFS_FS_ZIP_DEFLATE is not set in /boot/config-6.12.0"},
		{"zstd absent", withConfig, img("zstd"), Refuse, "CONFIG_EROFS_FS_ZIP_ZSTD is not set"},
		{"no config, old kernel", KernelFacts{Release: "5.15.0-91-generic"}, img("lzma"), Warn, "lzma EROFS images need Linux >= 5.16 with CONFIG_EROFS_FS_ZIP_LZMA, the kernel is 5.15.0-91-generic"},
		{"no config, zstd on 6.9", KernelFacts{Release: "6.9.12"}, img("zstd"), Warn, "Linux >= 6.10"},
		{"no config, new kernel", KernelFacts{Release: "6.10.1"}, img("zstd"), "", ""},
		{"no config, no release", KernelFacts{}, img("zstd"), "", ""},
		{"unknown compressor", withConfig, img("brotli"), Warn, `EROFS compressor "brotli"`},
		{"squashfs", withConfig, Image{Name: "tools", Format: fsimage.Squashfs, Compression: []string{"zstd"}}, "", ""},
	} {
		t.Run(c.what, func(t *testing.T) {
			f := goodFacts(t, plainMountInfo)
			f.Kernel = c.kernel
			r := Preflight(f, []Image{c.image}, false)
			if c.sev == "" {
				if len(r.Findings) != 0 {
					t.Fatalf("findings %+v", r.Findings)
				}
				return
			}
			if len(r.Findings) != 1 || r.Findings[0].Severity != c.sev || !strings.Contains(r.Findings[0].Cause, c.want) {
				t.Fatalf("findings %+v, want one %s containing %q", r.Findings, c.sev, c.want)
			}
			if c.sev == Refuse && (r.Err() == nil || !strings.Contains(r.Err().Error(), "--compression lz4hc")) {
				t.Fatalf("Err = %v", r.Err())
			}
			// Another root boots its own kernel: only a warning.
			f.Offline = true
			if r := Preflight(f, []Image{c.image}, false); r.Err() != nil {
				t.Fatalf("offline: %v", r.Err())
			}
		})
	}
}

// Gather reads the kernel configuration, gzip-compressed as
// /proc/config.gz is, or plain as /boot/config-RELEASE.
func TestGatherKernelConfig(t *testing.T) {
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write([]byte(erofsConfig))
	zw.Close()
	for _, p := range []string{writeConfig(t, "config.gz", gz.String()), writeConfig(t, "config-6.12.0", erofsConfig)} {
		k := gatherKernel(System{KernelRelease: "6.12.0", KernelConfig: p})
		if k.Release != "6.12.0" || k.ConfigPath != p || k.Config["CONFIG_EROFS_FS_ZIP_LZMA"] != "y" || k.Config["CONFIG_EROFS_FS_ZIP_DEFLATE"] != "" {
			t.Fatalf("%s: %+v", p, k)
		}
	}
	if k := gatherKernel(System{KernelRelease: "6.12.0", KernelConfig: filepath.Join(t.TempDir(), "missing")}); k.Config != nil {
		t.Fatalf("a missing config read as %+v", k.Config)
	}
}

func writeConfig(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}
