package deltabench

import (
	"context"
	"crypto/sha256"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/sysext/sysext/builder"
	"github.com/sysext/sysext/extension"
)

// Epoch is the SOURCE_DATE_EPOCH of every workload image.
const Epoch = 1700000000

// Variant is one way to build the workload's images: a format, a
// compression as `sysext build --compression` takes it, and optionally
// tool options the builder does not offer (block size, fragments, EROFS
// extended options), which are measured by running the tool directly with
// the builder's arguments plus Extra.
type Variant struct {
	Label       string
	Format      builder.ImageFormat
	Compression string
	Extra       []string
	// SameAs names a builder variant whose images this one must equal
	// byte for byte (the tool run directly with the tool's own default
	// as Extra): Measure checks it, so the direct runs are known to be
	// the builder's.
	SameAs string
}

// Meta is the extension metadata of r's images.
func Meta(r Release) extension.Metadata {
	return extension.Metadata{Name: r.Name, Version: r.Version, Arch: archX86_64}
}

// BuildImage builds r's tree into out with variant v: with the project's
// builder (as `sysext build TREE --name N --version V --arch x86-64
// --format F --compression C --enable devtools-mirror.service`) when v has
// no Extra, else with the tool run directly on the builder's own tree (the
// tree plus the extension-release file and drop-in, unpacked from an
// uncompressed build) with the builder's arguments and Extra.
func BuildImage(ctx context.Context, v Variant, tree, out string, r Release, scratch string) error {
	if len(v.Extra) == 0 {
		opts := builder.Options{Tree: tree, Meta: Meta(r), Format: v.Format, Compression: v.Compression,
			Output: out, Force: true, SourceDateEpoch: Epoch}
		if r.Name == ExtensionName {
			opts.Enable = []string{Unit}
		}
		_, err := builder.Build(ctx, opts)
		return err
	}
	staged, err := stagedTree(ctx, tree, r, scratch)
	if err != nil {
		return err
	}
	name, args := toolArgs(v, r, staged, out)
	_ = os.Remove(out)
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = withoutEpoch()
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%s %s: %w\n%s", name, strings.Join(args, " "), err, b)
	}
	return nil
}

// stagedTree returns the tree of r as the builder gives it to the tool
// (the release file and drop-in added), made once under scratch.
func stagedTree(ctx context.Context, tree string, r Release, scratch string) (string, error) {
	dir := filepath.Join(scratch, "staged", r.Name+"-"+r.Version)
	if _, err := os.Stat(dir); err == nil {
		return dir, nil
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return "", err
	}
	img := dir + ".raw"
	if err := BuildImage(ctx, Variant{Format: builder.Squashfs, Compression: "none"}, tree, img, r, scratch); err != nil {
		return "", err
	}
	defer os.Remove(img)
	_ = os.RemoveAll(dir + ".tmp")
	if b, err := exec.CommandContext(ctx, "unsquashfs", "-no-progress", "-d", dir+".tmp", img).CombinedOutput(); err != nil {
		return "", fmt.Errorf("unsquashfs %s: %w\n%s", img, err, b)
	}
	return dir, os.Rename(dir+".tmp", dir)
}

// toolArgs are the builder's tool arguments (builder.toolArgs, quiet) plus
// v.Extra; the variants with SameAs check that they give the builder's
// bytes.
func toolArgs(v Variant, r Release, dir, out string) (string, []string) {
	epoch := strconv.Itoa(Epoch)
	alg, level, _ := strings.Cut(v.Compression, ":")
	if v.Format == builder.EROFS {
		if alg == "" {
			alg = builder.DefaultEROFSCompression
		}
		args := []string{"--all-root", "-T" + epoch, "-U" + erofsUUID(r)}
		if alg != "none" {
			z := "-z" + alg
			if level != "" {
				z += "," + level
			}
			// A -C in Extra comes later and wins.
			args = append(args, z, "-C"+strconv.Itoa(builder.EROFSPcluster))
		}
		args = append(append(args, "--quiet"), v.Extra...)
		return "mkfs.erofs", append(args, out, dir)
	}
	if alg == "" {
		alg = builder.DefaultSquashfsCompression
	}
	args := []string{dir, out, "-noappend", "-all-root", "-root-mode", "0755", "-reproducible", "-mkfs-time", epoch, "-all-time", epoch}
	if alg == "none" {
		args = append(args, "-noI", "-noId", "-noD", "-noF", "-noX")
	} else {
		args = append(args, "-comp", alg)
		if level != "" {
			args = append(args, "-Xcompression-level", level)
		}
	}
	return "mksquashfs", append(append(args, "-quiet", "-no-progress"), v.Extra...)
}

// erofsUUID is the builder's filesystem UUID for a system extension.
func erofsUUID(r Release) string {
	h := sha256.Sum256([]byte("sysext\x00" + r.Name + "\x00" + r.Version + "\x00" + string(archX86_64)))
	h[6] = h[6]&0x0f | 0x40
	h[8] = h[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", h[0:4], h[4:6], h[6:8], h[8:10], h[10:16])
}

func withoutEpoch() []string {
	var env []string
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, "SOURCE_DATE_EPOCH=") {
			env = append(env, e)
		}
	}
	return env
}

// archX86_64 is the workload's ARCHITECTURE (the programs are built for
// the host, amd64).
const archX86_64 extension.Arch = "x86-64"
