package flix

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sys/unix"
	"oras.land/oras-go/v2/content"

	"github.com/sysext/sysext/atomicfile"
	"github.com/sysext/sysext/extension"
	"github.com/sysext/sysext/internal/blob"
	"github.com/sysext/sysext/internal/extract"
	"github.com/sysext/sysext/internal/mediatype"
)

// dockerConfig is a Docker image's config media type, which registries
// still serve for most images.
const dockerConfig = "application/vnd.docker.container.image.v1+json"

// MaxMetadataSize bounds manifests, indexes and configs read into memory.
const MaxMetadataSize = 4 << 20

// maxZstdWindow bounds the memory a zstd layer may ask for; real layers use
// a few MiB.
const maxZstdWindow = 32 << 20

// ConfigSuffix is appended to a rootfs directory's path to name the file
// that keeps the image's config (entrypoint, env, user, ...):
// DIR.config.json next to DIR.
const ConfigSuffix = ".config.json"

// Image is a container image resolved to one platform: its manifest and
// its config.
type Image struct {
	Descriptor  ocispec.Descriptor // the manifest's
	Manifest    ocispec.Manifest
	Config      ocispec.Image
	ConfigBytes []byte // as stored, digest-checked
}

// ResolveImage reads the manifest desc points to; an index (OCI or Docker)
// is resolved to the entry for arch (systemd naming; "" is the host's).
// Manifests and configs are size-limited and digest-checked.
func ResolveImage(ctx context.Context, f content.Fetcher, desc ocispec.Descriptor, arch extension.Arch) (*Image, error) {
	if arch == "" {
		arch = extension.HostArch()
	}
	goarch, variant := arch.OCIPlatform()
	if goarch == "" {
		return nil, fmt.Errorf("architecture %q has no OCI platform: name one with --platform", arch)
	}
	for depth := 0; ; depth++ {
		switch {
		case mediatype.IsIndex(desc.MediaType):
			if depth > 2 {
				return nil, errors.New("indexes nested too deeply")
			}
			body, err := blob.Read(ctx, f, desc, MaxMetadataSize)
			if err != nil {
				return nil, fmt.Errorf("index %s: %w", desc.Digest, err)
			}
			var idx ocispec.Index
			if err := json.Unmarshal(body, &idx); err != nil {
				return nil, fmt.Errorf("index %s: %w", desc.Digest, err)
			}
			d, err := pickPlatform(idx, goarch, variant)
			if err != nil {
				return nil, err
			}
			desc = d
		case mediatype.IsManifest(desc.MediaType):
			return readImage(ctx, f, desc, goarch)
		default:
			return nil, fmt.Errorf("%s is a %q, not a container image manifest or index", desc.Digest, desc.MediaType)
		}
	}
}

func pickPlatform(idx ocispec.Index, goarch, variant string) (ocispec.Descriptor, error) {
	var found []ocispec.Descriptor
	var have []string
	for _, m := range idx.Manifests {
		p := m.Platform
		if p == nil {
			continue
		}
		if p.OS == "unknown" || p.Architecture == "unknown" {
			continue // attestations
		}
		s := p.OS + "/" + p.Architecture
		if p.Variant != "" {
			s += "/" + p.Variant
		}
		have = append(have, s)
		if (p.OS == "linux" || p.OS == "") && p.Architecture == goarch {
			if variant != "" && p.Variant != "" && p.Variant != variant {
				continue
			}
			found = append(found, m)
		}
	}
	if len(found) == 0 {
		want := "linux/" + goarch
		if variant != "" {
			want += "/" + variant
		}
		return ocispec.Descriptor{}, fmt.Errorf("the image has no build for %s (it has: %s): choose one with --platform", want, strings.Join(have, ", "))
	}
	return found[0], nil
}

func readImage(ctx context.Context, f content.Fetcher, desc ocispec.Descriptor, goarch string) (*Image, error) {
	body, err := blob.Read(ctx, f, desc, MaxMetadataSize)
	if err != nil {
		return nil, fmt.Errorf("manifest %s: %w", desc.Digest, err)
	}
	img := &Image{Descriptor: desc}
	if err := json.Unmarshal(body, &img.Manifest); err != nil {
		return nil, fmt.Errorf("manifest %s: %w", desc.Digest, err)
	}
	switch img.Manifest.Config.MediaType {
	case ocispec.MediaTypeImageConfig, dockerConfig:
	default:
		return nil, fmt.Errorf("manifest %s: config is a %q, not a container image config (is this a container image? extensions are fetched with 'sysext pull')", desc.Digest, img.Manifest.Config.MediaType)
	}
	for _, l := range img.Manifest.Layers {
		if !isLayerMediaType(l.MediaType) {
			return nil, fmt.Errorf("manifest %s: layer %s is a %q, not a tar layer", desc.Digest, l.Digest, l.MediaType)
		}
	}
	img.ConfigBytes, err = blob.Read(ctx, f, img.Manifest.Config, MaxMetadataSize)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", img.Manifest.Config.Digest, err)
	}
	if err := json.Unmarshal(img.ConfigBytes, &img.Config); err != nil {
		return nil, fmt.Errorf("config %s: %w", img.Manifest.Config.Digest, err)
	}
	if a := img.Config.Architecture; a != "" && a != goarch {
		return nil, fmt.Errorf("the image is for %s/%s, not %s: choose its platform with --platform", img.Config.OS, a, goarch)
	}
	if n := len(img.Config.RootFS.DiffIDs); n != 0 && n != len(img.Manifest.Layers) {
		return nil, fmt.Errorf("config %s lists %d layers, the manifest %d", img.Manifest.Config.Digest, n, len(img.Manifest.Layers))
	}
	return img, nil
}

func isLayerMediaType(mt string) bool {
	return strings.HasPrefix(mt, "application/vnd.oci.image.layer.") ||
		strings.HasPrefix(mt, "application/vnd.docker.image.rootfs.")
}

// verifier hashes and counts a blob as it is read, so content is checked
// on the one pass that uses it.
type verifier struct {
	r    io.Reader
	h    hash.Hash
	want ocispec.Descriptor
	n    int64
}

func newVerifier(r io.Reader, desc ocispec.Descriptor) *verifier {
	return &verifier{r: r, h: desc.Digest.Algorithm().Hash(), want: desc}
}

func (v *verifier) Read(p []byte) (int, error) {
	n, err := v.r.Read(p)
	v.n += int64(n)
	v.h.Write(p[:n])
	if v.n > v.want.Size {
		return n, fmt.Errorf("blob %s is longer than the %d bytes its descriptor says: refused", v.want.Digest, v.want.Size)
	}
	return n, err
}

func (v *verifier) check() error {
	if v.n != v.want.Size {
		return fmt.Errorf("blob %s: got %d bytes, the descriptor says %d: refused", v.want.Digest, v.n, v.want.Size)
	}
	got := digest.NewDigest(v.want.Digest.Algorithm(), v.h)
	if got != v.want.Digest {
		return fmt.Errorf("blob %s: content has digest %s: refused", v.want.Digest, got)
	}
	return nil
}

// ApplyLayers fetches each layer, decompresses it (gzip, zstd or plain
// tar, told by its first bytes), applies it, and checks its digest (and its
// diff ID when diffIDs has one for it) as it streams. A mismatch is an
// error after the fact: callers extract into a directory they throw away on
// error, as Rootfs does.
func ApplyLayers(ctx context.Context, f content.Fetcher, layers []ocispec.Descriptor, diffIDs []digest.Digest, a *extract.Applier) error {
	for i, l := range layers {
		var diffID digest.Digest
		if i < len(diffIDs) {
			diffID = diffIDs[i]
		}
		if err := applyLayer(ctx, f, l, diffID, a); err != nil {
			return fmt.Errorf("layer %d (%s): %w", i+1, l.Digest, err)
		}
	}
	return nil
}

func applyLayer(ctx context.Context, f content.Fetcher, l ocispec.Descriptor, diffID digest.Digest, a *extract.Applier) error {
	if err := l.Digest.Validate(); err != nil {
		return err
	}
	if diffID != "" {
		if err := diffID.Validate(); err != nil {
			return fmt.Errorf("diff ID: %w", err)
		}
	}
	rc, err := f.Fetch(ctx, l)
	if err != nil {
		return err
	}
	// Three stages on their own goroutines, so that they overlap: the
	// download with the blob's digest, the decompression, and (here) the
	// diff ID's digest with writing the files. Decompression is the
	// longest; the hashes were on its goroutine before.
	v := newVerifier(rc, l)
	raw := newReadAhead(v)
	var dr io.ReadCloser
	var ra *readAhead
	// Upstream first: closing the body unblocks a download waiting for
	// bytes, and each stage then ends on its source's end.
	defer func() {
		rc.Close()
		raw.Close()
		if ra != nil {
			ra.Close()
		}
		if dr != nil {
			dr.Close()
		}
	}()
	br := bufio.NewReaderSize(raw, 1<<20)
	dr, err = decompress(br)
	if err != nil {
		return err
	}
	ra = newReadAhead(dr)
	var tarStream io.Reader = ra
	var dh hash.Hash
	if diffID != "" {
		dh = diffID.Algorithm().Hash()
		tarStream = io.TeeReader(ra, dh)
	}
	applyErr := a.Apply(ctx, tarStream)
	if ctx.Err() != nil {
		return ctx.Err()
	}
	// Read to the end either way: the digest covers every byte, and a
	// wrong digest explains a broken tar better than the tar error does.
	if _, err := io.Copy(io.Discard, tarStream); err != nil && applyErr == nil {
		applyErr = fmt.Errorf("decompress: %w", err)
	}
	if _, err := io.Copy(io.Discard, br); err != nil {
		return err
	}
	if err := v.check(); err != nil {
		return err
	}
	if applyErr != nil {
		return applyErr
	}
	if dh != nil {
		if got := digest.NewDigest(diffID.Algorithm(), dh); got != diffID {
			return fmt.Errorf("uncompressed content has digest %s, the config's diff ID is %s: refused", got, diffID)
		}
	}
	return nil
}

// decompress recognises gzip and zstd by their magic numbers; anything
// else is read as a plain tar.
func decompress(br *bufio.Reader) (io.ReadCloser, error) {
	magic, _ := br.Peek(4)
	switch {
	case bytes.HasPrefix(magic, []byte{0x1f, 0x8b}):
		z, err := gzip.NewReader(br)
		if err != nil {
			return nil, fmt.Errorf("gzip: %w", err)
		}
		return z, nil
	case bytes.Equal(magic, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		z, err := zstd.NewReader(br, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(maxZstdWindow))
		if err != nil {
			return nil, fmt.Errorf("zstd: %w", err)
		}
		return zstdCloser{z}, nil
	}
	return io.NopCloser(br), nil
}

type zstdCloser struct{ *zstd.Decoder }

func (z zstdCloser) Close() error { z.Decoder.Close(); return nil }

// RootfsOptions tune Rootfs. The zero value extracts the host's platform.
type RootfsOptions struct {
	Arch extension.Arch // platform to pick from an index; "" = the host's
	// Run is a shell command run inside the tree before it is put in place
	// (chroot in a private mount namespace with /proc, /dev and the host's
	// resolv.conf). Needs root.
	Run            string
	Stdout, Stderr io.Writer // for Run; nil discards
	// MaxSize bounds the bytes of the files written (see extract.Budget);
	// 0 derives the bound from the free space where dir is made.
	MaxSize int64
}

// RootfsResult says what Rootfs made.
type RootfsResult struct {
	Image      *Image
	Dir        string // the tree
	ConfigFile string // the image config, DIR.config.json
	Stats      extract.Stats
}

// Rootfs writes the root filesystem of the image desc points to (in f)
// into dir, which must not exist or be empty, and keeps the image config in
// dir+ConfigSuffix. The tree is built in a temp directory next to dir and
// renamed into place at the end, so on any error (a refused entry, a digest
// mismatch, a failing Run) nothing is left.
func Rootfs(ctx context.Context, f content.Fetcher, desc ocispec.Descriptor, dir string, opts RootfsOptions) (*RootfsResult, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	if err := checkTarget(dir); err != nil {
		return nil, err
	}
	if opts.Run != "" && !isRoot {
		return nil, errors.New("--run needs root (a private mount namespace and chroot): run as root or leave it out")
	}
	img, err := ResolveImage(ctx, f, desc, opts.Arch)
	if err != nil {
		return nil, err
	}
	budget, err := extract.NewBudget(opts.MaxSize, filepath.Dir(dir))
	if err != nil {
		return nil, err
	}
	tmp, err := os.MkdirTemp(filepath.Dir(dir), atomicfile.TempPrefix+filepath.Base(dir)+".")
	if err != nil {
		return nil, err
	}
	done := false
	defer func() {
		if !done {
			os.RemoveAll(tmp)
		}
	}()
	a, err := extract.NewApplier(tmp, extract.Options{Budget: budget})
	if err != nil {
		return nil, err
	}
	defer a.Close()
	if err := ApplyLayers(ctx, f, img.Manifest.Layers, img.Config.RootFS.DiffIDs, a); err != nil {
		return nil, err
	}
	if err := a.Finish(); err != nil {
		return nil, err
	}
	// The tree's own mode is ours, whatever a "./" entry says.
	if err := os.Chmod(tmp, 0o755); err != nil {
		return nil, err
	}
	if opts.Run != "" {
		if err := RunIn(ctx, tmp, opts.Run, img.Config.Config.Env, opts.Stdout, opts.Stderr); err != nil {
			return nil, err
		}
	}
	cfg := dir + ConfigSuffix
	if err := atomicfile.WriteFile(cfg, img.ConfigBytes, 0o644); err != nil {
		return nil, err
	}
	// rename(2) replaces an empty directory; os.Rename refuses to.
	if err := unix.Rename(tmp, dir); err != nil {
		os.Remove(cfg)
		return nil, fmt.Errorf("put %s in place: %w", dir, err)
	}
	done = true
	if err := atomicfile.SyncDir(filepath.Dir(dir)); err != nil {
		return nil, err
	}
	return &RootfsResult{Image: img, Dir: dir, ConfigFile: cfg, Stats: a.Stats()}, nil
}

// checkTarget accepts a directory that does not exist or is empty.
func checkTarget(dir string) error {
	fi, err := os.Lstat(dir)
	if errors.Is(err, os.ErrNotExist) {
		if _, err := os.Stat(filepath.Dir(dir)); err != nil {
			return fmt.Errorf("%s: parent directory: %w", dir, err)
		}
		return nil
	}
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s exists and is not a directory: choose another target", dir)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	if len(ents) > 0 {
		return fmt.Errorf("%s exists and is not empty: choose a new directory or remove it first", dir)
	}
	return nil
}

// ReadConfig reads the image config Rootfs kept next to dir; it returns
// nil without error when there is none.
func ReadConfig(dir string) (*ocispec.Image, error) {
	b, err := os.ReadFile(filepath.Clean(dir) + ConfigSuffix)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var img ocispec.Image
	if err := json.Unmarshal(b, &img); err != nil {
		return nil, fmt.Errorf("%s%s: %w", filepath.Clean(dir), ConfigSuffix, err)
	}
	return &img, nil
}
