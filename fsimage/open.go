package fsimage

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"sort"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/sysext/sysext/extension"
)

// Options says how much Open does beyond reading the metadata.
type Options struct {
	// Digest computes the sha256 of the whole file (streaming, constant
	// memory; about 0.5 s per GiB).
	Digest bool
	// CacheDigest uses and refreshes a digest cached in the file's
	// user.sysext.sha256 extended attribute, which is only used while the
	// file's size, mtime and inode number are those it was computed for,
	// and only on a file no one but us and root can write (see
	// cacheTrusted): whoever can write a file can set its user xattrs.
	// Never for a decision about trust (pull hashes what it downloads as it
	// streams); Info.DigestCached says the digest came from the cache.
	CacheDigest bool
	// Verity checks a disk image's dm-verity hash tree, when it has one,
	// against its data partition (one full read, see VerifyDDI) and fails
	// when they, the partition UUIDs or the signed root hash disagree.
	Verity bool
	// SpecialFiles walks the whole tree for setuid/setgid files, file
	// capabilities and device nodes (Info.SpecialFiles): all the image's
	// metadata is read, bounded like every read.
	SpecialFiles bool
}

// Open reads an image's metadata and its digest (from the cache when valid).
func Open(ctx context.Context, path string) (*Info, error) {
	return OpenWith(ctx, path, Options{Digest: true, CacheDigest: true})
}

// OpenMetadata reads an image's metadata without hashing it: a few small
// reads, fast and constant-memory whatever the image's size. Info.Digest
// is empty.
func OpenMetadata(ctx context.Context, path string) (*Info, error) {
	return OpenWith(ctx, path, Options{})
}

// OpenWith reads an image as opts say. The image is read, never mounted
// and never written (except the digest cache attribute when asked).
// Errors name the file: "FILE is not a squashfs, EROFS or GPT image"
// (ErrUnknownFormat), "FILE is a GPT disk image: ..." (ErrBadGPT and the
// like), "FILE has no .../extension-release.NAME" (ErrNoRelease).
func OpenWith(ctx context.Context, path string, opts Options) (*Info, error) {
	img, err := openImage(ctx, path)
	if err != nil {
		return nil, err
	}
	defer img.close()
	f, t := img.f, img.tree
	info := &Info{Path: path, Format: img.format, Size: img.size, DDI: img.ddi}
	if img.format == EROFS {
		if info.Compression, err = ErofsCompressors(f); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
	}
	if err := readMetadata(ctx, t, info); err != nil {
		if errors.Is(err, ErrNoRelease) {
			return nil, fmt.Errorf("%s %w", path, err)
		}
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if opts.Verity && info.DDI != nil && info.DDI.Hash() != nil {
		if _, err := verifyDDI(ctx, f, info.DDI); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
	}
	if opts.SpecialFiles {
		sf, capsRead, err := readSpecial(ctx, t)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		info.SpecialFiles, info.CapabilitiesUnread = sf, !capsRead
	}
	if opts.Digest {
		d, cached, err := digestFile(ctx, f, opts.CacheDigest)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		info.Digest, info.DigestCached = d, cached
	}
	return info, nil
}

// readMetadata finds the one extension-release file and the Upholds=
// drop-ins.
func readMetadata(ctx context.Context, t tree, info *Info) error {
	ents, err := t.readDir(ctx, extension.ReleaseDir)
	if errors.Is(err, fs.ErrNotExist) {
		return ErrNoRelease
	}
	if err != nil {
		return err
	}
	var names []string
	for _, e := range ents {
		if name, ok := strings.CutPrefix(e.name, "extension-release."); ok {
			if e.mode&fs.ModeSymlink != 0 {
				return fmt.Errorf("%s is a symlink: sysext reads only a regular extension-release file", shown(extension.ReleaseDir+"/"+e.name))
			}
			if e.mode.IsRegular() {
				names = append(names, name)
			}
		}
	}
	switch len(names) {
	case 0:
		return ErrNoRelease
	case 1:
	default:
		sort.Strings(names)
		return fmt.Errorf("%s holds %d extension-release files (%s): an image carries exactly one", extension.ReleaseDir, len(names), shown(strings.Join(names, ", ")))
	}
	name := names[0]
	if err := extension.ValidateName(name); err != nil {
		return fmt.Errorf("%s: %w", shown(extension.ReleasePath(name)), err)
	}
	data, err := t.readFile(ctx, extension.ReleasePath(name), extension.MaxReleaseSize)
	if err != nil {
		return err
	}
	rel, err := extension.ParseRelease(data)
	if err != nil {
		return fmt.Errorf("%s: %w", extension.ReleasePath(name), err)
	}
	meta, err := extension.MetadataFromRelease(name, rel)
	if err != nil {
		return fmt.Errorf("%s: %w", extension.ReleasePath(name), err)
	}
	info.Name, info.Release, info.Meta = name, rel, meta
	info.ReleaseBytes = bytes.Clone(data)
	info.Upholds, err = readUpholds(ctx, t)
	return err
}

// unitDir is where an extension's units and drop-ins live.
const unitDir = "usr/lib/systemd/system"

// maxDropIns bounds how many drop-in files we read from an untrusted image.
const maxDropIns = 1000

// readUpholds collects the units named in Upholds= of the [Unit] sections
// of usr/lib/systemd/system/*.target.d/*.conf, sorted and unique.
func readUpholds(ctx context.Context, t tree) ([]string, error) {
	targets, err := t.readDir(ctx, unitDir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	read := 0
	for _, d := range targets {
		if !d.mode.IsDir() || !strings.HasSuffix(d.name, ".target.d") {
			continue
		}
		dir := path.Join(unitDir, d.name)
		confs, err := t.readDir(ctx, dir)
		if err != nil {
			return nil, err
		}
		for _, c := range confs {
			if !c.mode.IsRegular() || !strings.HasSuffix(c.name, ".conf") {
				continue
			}
			if read++; read > maxDropIns {
				return nil, fmt.Errorf("%s: more than %d drop-in files", unitDir, maxDropIns)
			}
			data, err := t.readFile(ctx, path.Join(dir, c.name), extension.MaxReleaseSize)
			if err != nil {
				return nil, err
			}
			for _, u := range ParseUpholds(data) {
				seen[u] = true
			}
		}
	}
	out := make([]string, 0, len(seen))
	for u := range seen {
		out = append(out, u)
	}
	sort.Strings(out)
	if len(out) == 0 {
		return nil, nil
	}
	return out, nil
}

// ParseUpholds returns the units an Upholds= setting of a unit file's
// [Unit] section names; an empty assignment resets the list, as in systemd.
func ParseUpholds(data []byte) []string {
	var out []string
	section := ""
	for _, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		switch {
		case line == "" || line[0] == '#' || line[0] == ';':
			continue
		case line[0] == '[' && strings.HasSuffix(line, "]"):
			section = line[1 : len(line)-1]
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok || section != "Unit" || strings.TrimSpace(k) != "Upholds" {
			continue
		}
		fields := strings.Fields(v)
		if len(fields) == 0 {
			out = nil
		}
		out = append(out, fields...)
	}
	return out
}

// Digest returns "sha256:<hex>" of the file at path, hashing it as a
// stream; with cache it uses and refreshes the user.sysext.sha256 attribute.
func Digest(ctx context.Context, path string, cache bool) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	d, _, err := digestFile(ctx, f, cache)
	if err != nil {
		return "", fmt.Errorf("%s: %w", path, err)
	}
	return d, nil
}

// DigestXattr is the extended attribute caching an image's digest.
const DigestXattr = "user.sysext.sha256"

func digestFile(ctx context.Context, f *os.File, cache bool) (digest string, cached bool, err error) {
	key := ""
	if cache && cacheTrusted(f) {
		key = cacheKey(f)
		if key != "" {
			buf := make([]byte, 256)
			if n, err := unix.Fgetxattr(int(f.Fd()), DigestXattr, buf); err == nil {
				if k, d, ok := strings.Cut(string(buf[:n]), " "); ok && k == key && validDigest(d) {
					return d, true, nil
				}
			}
		}
	}
	h := sha256.New()
	buf := make([]byte, 1<<20)
	r := io.NewSectionReader(f, 0, 1<<62)
	for {
		if err := ctx.Err(); err != nil {
			return "", false, err
		}
		n, err := r.Read(buf)
		h.Write(buf[:n])
		if err == io.EOF {
			break
		}
		if err != nil {
			return "", false, fmt.Errorf("hash: %w", err)
		}
	}
	d := "sha256:" + hex.EncodeToString(h.Sum(nil))
	if key != "" && cacheKey(f) == key {
		// Best effort: a filesystem without user xattrs just recomputes.
		_ = unix.Fsetxattr(int(f.Fd()), DigestXattr, []byte(key+" "+d), 0)
	}
	return d, false, nil
}

// cacheTrusted says whether f's digest attribute can only have been set by
// us or by root: setting a user xattr needs write access to the file, so
// the file must be owned by us or root and writable by neither its group
// nor others. A file someone else can write may carry any digest.
func cacheTrusted(f *os.File) bool {
	st, err := f.Stat()
	if err != nil {
		return false
	}
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok {
		return false
	}
	owner := int(sys.Uid)
	return (owner == 0 || owner == os.Geteuid()) && st.Mode().Perm()&0o022 == 0
}

// SetDigestCache records digest in path's cache attribute (best effort), for
// a writer that hashed the file as it wrote it.
func SetDigestCache(path, digest string) {
	f, err := os.Open(path)
	if err != nil {
		return
	}
	defer f.Close()
	if key := cacheKey(f); key != "" && validDigest(digest) {
		_ = unix.Fsetxattr(int(f.Fd()), DigestXattr, []byte(key+" "+digest), 0)
	}
}

// cacheKey identifies one content of a file: size, mtime and inode. A
// rewrite in place that keeps all three (touch -d after editing) defeats
// it, which is why the cache is never used to decide trust.
func cacheKey(f *os.File) string {
	st, err := f.Stat()
	if err != nil {
		return ""
	}
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok {
		return ""
	}
	return "v1:" + strconv.FormatInt(st.Size(), 10) + ":" + strconv.FormatInt(st.ModTime().UnixNano(), 10) + ":" + strconv.FormatUint(sys.Ino, 10)
}

func validDigest(d string) bool {
	h, ok := strings.CutPrefix(d, "sha256:")
	if !ok || len(h) != 64 {
		return false
	}
	_, err := hex.DecodeString(h)
	return err == nil
}

// openedImage is an image file with its format recognised and its tree
// ready to read.
type openedImage struct {
	f      *os.File
	size   int64
	format Format
	tree   tree
	ddi    *DDI // a disk image's partitions; nil for a plain filesystem
}

func (i *openedImage) close() {
	i.tree.close()
	i.f.Close()
}

// openImage opens path, refuses what is not a squashfs or EROFS image or a
// GPT disk image with an extension's partitions, and opens its tree (for a
// disk image, the root or usr partition's). Errors name the file.
func openImage(ctx context.Context, path string) (*openedImage, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if !st.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("%s is not a regular file", path)
	}
	format, err := Detect(f)
	if err != nil {
		f.Close()
		if errors.Is(err, ErrUnknownFormat) {
			return nil, fmt.Errorf("%s %w", path, err)
		}
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if format == GPT {
		d, t, err := openDDI(ctx, f, f.Name(), st.Size())
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("%s is a GPT disk image: %w", path, err)
		}
		return &openedImage{f: f, size: st.Size(), format: format, tree: t, ddi: d}, nil
	}
	t, err := openTree(ctx, f, f.Name(), st.Size(), format)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &openedImage{f: f, size: st.Size(), format: format, tree: t}, nil
}
