package builder

import (
	"bytes"
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sysext/sysext/atomicfile"
	"github.com/sysext/sysext/extension"
	"github.com/sysext/sysext/fsimage"
	"github.com/sysext/sysext/internal/smallfile"
	"github.com/sysext/sysext/internal/tool"
	"github.com/sysext/sysext/verity"
)

// DDI is a Discoverable Disk Image: a GPT disk image with the root
// partition (the tree as EROFS or squashfs, Options.Filesystem), its
// root-verity hash partition and, with Options.SignKey, the
// root-verity-sig partition that signs the root hash. The partition types
// are the Discoverable Partitions Specification's for the extension's
// architecture; the data and hash partitions' UUIDs are the first and last
// 128 bits of the root hash, which is how systemd finds them.
const DDI ImageFormat = "ddi"

// DefaultDDIFilesystem is the root partition's filesystem, as systemd's
// own sysext definitions (systemd-repart --make-ddi=sysext) choose it.
const DefaultDDIFilesystem = EROFS

// How a DDI was built, in Result.DDIBuilder.
const (
	// DDIByRepart: systemd-repart 257 or newer built the whole image
	// offline (no loop device), signature included.
	DDIByRepart = "systemd-repart"
	// DDIByVeritysetup: mksquashfs or mkfs.erofs wrote the filesystem,
	// veritysetup format the hash tree, sysext the partition table
	// (ddi_gpt.go) and the signature (verity). For build hosts whose
	// systemd-repart is older: 252 needs loop devices, has no EROFS and no
	// Minimize=, and writes 512-byte verity blocks.
	DDIByVeritysetup = "veritysetup"
)

// minRepart is the first systemd-repart that builds a DDI offline with
// EROFS, Minimize= and a signature.
const minRepart = 257

// ddiMethod forces a way of building (tests); "" picks the best available.
var ddiMethod = ""

// The layout our own writer uses, as systemd-repart 257 lays out small
// images: 512-byte sectors, 4 KiB-aligned partitions starting right after
// the primary table, a 16 KiB signature partition, the disk size a
// multiple of 4 KiB.
const (
	ddiSector     = 512
	ddiAlign      = 4096
	ddiFirstByte  = 40 * ddiSector // first 4 KiB boundary after LBA 33
	ddiBackupSize = 33 * ddiSector // backup entries and header
	ddiSigSize    = 16 << 10
	// GPT attribute bit 60: read-only, as repart marks verity data and
	// hash partitions.
	gptReadOnly = 1 << 60
)

// ddiPlan is what buildDDI needs beyond the filesystem's plan.
type ddiPlan struct {
	*buildPlan
	fs     ImageFormat
	key    crypto.Signer
	cert   *x509.Certificate
	opts   Options
	method string
}

// buildDDI builds a DDI: see DDI. The filesystem is built as Build builds
// any image (the same checks, the same bytes), then put in a partition.
func buildDDI(ctx context.Context, opts Options) (*Result, error) {
	d, err := planDDI(ctx, opts)
	if err != nil {
		return nil, err
	}
	work, err := os.MkdirTemp(d.outDir, atomicfile.TempPrefix+filepath.Base(d.target)+".ddi-")
	if err != nil {
		return nil, fmt.Errorf("create a work directory in %s: %w", d.outDir, err)
	}
	defer os.RemoveAll(work)

	var image, rootHash string
	var warnings []string
	if d.method == DDIByRepart {
		image, rootHash, warnings, err = d.withRepart(ctx, work)
	} else {
		image, rootHash, warnings, err = d.withVeritysetup(ctx, work)
	}
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("build %s: stopped, nothing was written: %w", d.target, ctx.Err())
		}
		return nil, err
	}
	out, err := atomicfile.Adopt(d.target, image, 0o644)
	if err != nil {
		return nil, err
	}
	defer out.Close()
	timed := phaseTimer()
	info, err := d.checkWritten(ctx, out.TempName(), rootHash)
	timed("ddi-check")
	if err != nil {
		return nil, err
	}
	commit := out.CommitUnsynced
	if d.sync {
		commit = out.Commit
	}
	if err := commit(d.opts.Force); err != nil {
		if errors.Is(err, os.ErrExist) {
			return nil, fmt.Errorf("%s already exists: use --force to replace it", d.target)
		}
		return nil, err
	}
	res := &Result{
		Path: d.target, Format: DDI, Filesystem: d.fs, Size: info.Size, Meta: info.Meta, Release: info.Release,
		Upholds: info.Upholds, Warnings: warnings, RootHash: rootHash, DDIBuilder: d.method,
	}
	if d.cert != nil {
		ci := verity.Info(d.cert)
		res.Signer = &ci
	}
	if d.opts.Digest {
		if res.Digest, err = fsimage.Digest(ctx, d.target, false); err != nil {
			return nil, err
		}
		fsimage.SetDigestCache(d.target, res.Digest)
	}
	return res, nil
}

func planDDI(ctx context.Context, opts Options) (*ddiPlan, error) {
	fs := opts.Filesystem
	if fs == "" {
		fs = DefaultDDIFilesystem
	}
	if fs != EROFS && fs != Squashfs {
		return nil, invalid(fmt.Errorf("--fs %s: a DDI's root partition is erofs or squashfs", fs))
	}
	if opts.Kind != "" && opts.Kind != KindSysext {
		return nil, invalid(errors.New("--format ddi: only system extensions are built as disk images"))
	}
	if opts.Meta.Arch == extension.AnyArch {
		return nil, invalid(errors.New("--format ddi with --arch _any: a disk image's partition types name one architecture; give --arch"))
	}
	inner := opts
	inner.Format = fs
	p, err := plan(ctx, inner)
	if err != nil {
		return nil, err
	}
	if _, err := fsimage.PartitionType(fsimage.DesignatorRoot, p.meta.Arch); err != nil {
		return nil, invalid(fmt.Errorf("--arch %s: %w", p.meta.Arch, err))
	}
	d := &ddiPlan{buildPlan: p, fs: fs, opts: opts}
	if (opts.SignKey == "") != (opts.Certificate == "") {
		return nil, invalid(errors.New("--sign-key and --certificate go together: the key signs the root hash, the certificate names it"))
	}
	if opts.SignKey != "" {
		kb, err := smallfile.Read(opts.SignKey, 1<<20)
		if err != nil {
			return nil, fmt.Errorf("--sign-key: %w", err)
		}
		if d.key, err = verity.ParsePrivateKey(kb); err != nil {
			return nil, fmt.Errorf("--sign-key %s: %w", opts.SignKey, err)
		}
		cb, err := smallfile.Read(opts.Certificate, 1<<20)
		if err != nil {
			return nil, fmt.Errorf("--certificate: %w", err)
		}
		certs, err := verity.ParseCertificates(cb)
		if err != nil {
			return nil, fmt.Errorf("--certificate %s: %w", opts.Certificate, err)
		}
		d.cert = certs[0]
		if !verity.KeyMatches(d.cert, d.key) {
			return nil, fmt.Errorf("--sign-key %s is not the key of --certificate %s", opts.SignKey, opts.Certificate)
		}
	}
	d.method, err = ddiBuilder()
	if err != nil {
		return nil, err
	}
	return d, nil
}

// ddiBuilder picks how to build: systemd-repart where this host's can,
// else veritysetup and our own partition table.
func ddiBuilder() (string, error) {
	switch ddiMethod {
	case DDIByRepart, DDIByVeritysetup:
		return ddiMethod, nil
	}
	if v, err := RepartVersion(context.Background()); err == nil && v >= minRepart {
		return DDIByRepart, nil
	}
	if _, err := tool.Look("veritysetup"); err == nil {
		return DDIByVeritysetup, nil
	}
	return "", fmt.Errorf("building a disk image needs systemd-repart %d or newer, or veritysetup: install it with 'apt-get install cryptsetup-bin'", minRepart)
}

var systemdVersion = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^systemd (\d+)`) })

// RepartVersion returns the version of the systemd-repart on PATH.
func RepartVersion(ctx context.Context) (int, error) {
	out, err := tool.Run(ctx, "systemd-repart", "--version")
	if err != nil {
		return 0, err
	}
	m := systemdVersion().FindSubmatch(out)
	if m == nil {
		return 0, fmt.Errorf("systemd-repart --version printed no version")
	}
	return strconv.Atoi(string(m[1]))
}

// derived makes a reproducible 16-byte value for what, from the
// extension's identity or the root hash: partition and disk UUIDs, the
// verity salt, repart's seed.
func derived(what string, parts ...string) [32]byte {
	return sha256.Sum256([]byte("sysext ddi\x00" + what + "\x00" + strings.Join(parts, "\x00")))
}

// uuidOf formats 16 bytes as a UUID (version 4 layout, RFC 4122 variant).
func uuidOf(b []byte) string {
	var u [16]byte
	copy(u[:], b)
	u[6] = u[6]&0x0f | 0x40
	u[8] = u[8]&0x3f | 0x80
	return rawUUID(u[:])
}

// rawUUID formats 16 bytes as a UUID string, unchanged: the partition
// UUIDs carry the root hash's bits as they are.
func rawUUID(u []byte) string {
	return fmt.Sprintf("%x-%x-%x-%x-%x", u[0:4], u[4:6], u[6:8], u[8:10], u[10:16])
}

func (d *ddiPlan) identity() []string {
	return []string{d.meta.Name, d.meta.Version, string(d.meta.Arch), string(d.fs)}
}

// withVeritysetup builds the filesystem with Build, the hash tree with
// veritysetup format, and lays out the disk image around them.
func (d *ddiPlan) withVeritysetup(ctx context.Context, work string) (image, rootHash string, warnings []string, err error) {
	inner := d.opts
	inner.Format, inner.Output, inner.Force, inner.Sync, inner.Digest = d.fs, filepath.Join(work, "root.raw"), false, false, false
	timed := phaseTimer()
	res, err := Build(ctx, inner)
	timed("ddi-filesystem")
	if err != nil {
		return "", "", nil, err
	}
	fsInfo, err := os.Stat(res.Path)
	if err != nil {
		return "", "", nil, err
	}
	// The filesystem goes into the disk image (an in-kernel copy) while
	// veritysetup reads it for the tree: both from the page cache, side by
	// side, so the copy costs no time of its own.
	image = filepath.Join(work, "image.raw")
	copied := make(chan error, 1)
	go func() { copied <- copyAt(ctx, res.Path, image, ddiFirstByte) }()
	hashFile := filepath.Join(work, "verity.raw")
	salt := derived("verity salt", d.identity()...)
	u := derived("verity uuid", d.identity()...)
	out, err := tool.Run(ctx, "veritysetup", "format", "--hash=sha256", "--data-block-size=4096", "--hash-block-size=4096",
		"--salt="+hex.EncodeToString(salt[:]), "--uuid="+uuidOf(u[:16]), res.Path, hashFile)
	if cerr := <-copied; err == nil && cerr != nil {
		return "", "", nil, fmt.Errorf("build %s: copy the filesystem into the disk image: %w", d.target, cerr)
	}
	os.Remove(res.Path) // before its pages are written back: they need not be
	if err != nil {
		return "", "", nil, fmt.Errorf("build %s: veritysetup format: %w", d.target, err)
	}
	m := regexp.MustCompile(`(?m)^Root hash:\s+([0-9a-f]{64})$`).FindSubmatch(out)
	if m == nil {
		return "", "", nil, fmt.Errorf("build %s: veritysetup format printed no root hash", d.target)
	}
	rootHash = string(m[1])
	timed("ddi-veritysetup")
	err = d.assemble(ctx, image, fsInfo.Size(), hashFile, rootHash)
	timed("ddi-assemble")
	return image, rootHash, res.Warnings, err
}

// copyAt creates dst holding src's bytes from offset off, zeros before.
func copyAt(ctx context.Context, src, dst string, off int64) error {
	out, err := os.OpenFile(dst, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	if err := copyInto(ctx, out, off, src); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// assemble completes the disk image whose root partition (fsSize bytes
// at ddiFirstByte) is in place: the hash tree and the signature after it,
// the partition tables in front and at the end.
func (d *ddiPlan) assemble(ctx context.Context, image string, fsSize int64, hashPath, rootHash string) error {
	root, err := hex.DecodeString(rootHash)
	if err != nil || len(root) != sha256.Size {
		return fmt.Errorf("root hash %q", rootHash)
	}
	var sigData []byte
	if d.key != nil {
		sig, err := verity.Sign(root, d.cert, d.key)
		if err != nil {
			return err
		}
		if sigData, err = sig.Marshal(); err != nil {
			return err
		}
		if len(sigData) > ddiSigSize {
			return fmt.Errorf("the signature takes %d bytes, more than the %d of its partition: use a smaller certificate", len(sigData), ddiSigSize)
		}
	}
	hashInfo, err := os.Stat(hashPath)
	if err != nil {
		return err
	}
	rootStart := int64(ddiFirstByte)
	rootSize := alignUp(fsSize, ddiAlign)
	hashStart := rootStart + rootSize
	hashSize := alignUp(hashInfo.Size(), ddiAlign)
	sigStart := hashStart + hashSize
	end := sigStart
	if sigData != nil {
		end += ddiSigSize
	}
	total := alignUp(end+ddiBackupSize, ddiAlign)

	f, err := os.OpenFile(image, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Truncate(total); err != nil {
		return err
	}
	if err := copyInto(ctx, f, hashStart, hashPath); err != nil {
		return fmt.Errorf("write the hash partition: %w", err)
	}
	if sigData != nil {
		if _, err := f.WriteAt(sigData, sigStart); err != nil {
			return fmt.Errorf("write the signature partition: %w", err)
		}
	}
	parts := []gptPartition{
		d.partition(fsimage.DesignatorRoot, rawUUID(root[:16]), rootStart, rootSize, gptReadOnly),
		d.partition(fsimage.DesignatorRootVerity, rawUUID(root[len(root)-16:]), hashStart, hashSize, gptReadOnly),
	}
	if sigData != nil {
		sigUUID := derived("root-verity-sig", rootHash)
		parts = append(parts, d.partition(fsimage.DesignatorRootVeritySig, uuidOf(sigUUID[:16]), sigStart, ddiSigSize, 0))
	}
	diskUUID := derived("disk", rootHash)
	if err := writeGPT(f, total, uuidOf(diskUUID[:16]), parts); err != nil {
		return err
	}
	return f.Close()
}

func (d *ddiPlan) partition(designator, uuid string, start, size int64, attrs uint64) gptPartition {
	t, _ := fsimage.PartitionType(designator, d.meta.Arch) // checked by planDDI
	base, suffix, _ := strings.Cut(designator, "-")
	label := base + "-" + string(d.meta.Arch)
	if suffix != "" {
		label += "-" + suffix
	}
	return gptPartition{typ: t, uuid: uuid, name: label, attrs: attrs,
		first: uint64(start / ddiSector), last: uint64((start+size)/ddiSector - 1)}
}

// copyInto copies the file at src into f at offset off.
func copyInto(ctx context.Context, f *os.File, off int64, src string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	st, err := in.Stat()
	if err != nil {
		return err
	}
	var inOff int64
	for inOff < st.Size() {
		if err := ctx.Err(); err != nil {
			return err
		}
		outOff := off + inOff
		n, err := unix.CopyFileRange(int(in.Fd()), &inOff, int(f.Fd()), &outOff, int(min(st.Size()-inOff, 64<<20)), 0)
		if err != nil {
			// No copy_file_range here: plain reads and writes.
			_, err = io.Copy(io.NewOffsetWriter(f, off+inOff), io.NewSectionReader(in, inOff, st.Size()-inOff))
			return err
		}
		if n == 0 {
			return io.ErrUnexpectedEOF
		}
	}
	return nil
}

func alignUp(n, a int64) int64 { return (n + a - 1) / a * a }

// checkWritten reads the disk image back as a node will: the
// extension-release inside its root partition must be the one we meant,
// the partition UUIDs must carry the root hash, and the signature
// partition must sign it with our certificate.
func (d *ddiPlan) checkWritten(ctx context.Context, path, rootHash string) (*fsimage.Info, error) {
	info, err := fsimage.OpenMetadata(ctx, path)
	if err != nil {
		return nil, fmt.Errorf("check the disk image %s wrote: %w", d.method, err)
	}
	dd := info.DDI
	switch {
	case dd == nil:
		return nil, fmt.Errorf("check the disk image %s wrote: it is no disk image", d.method)
	case info.Name != d.meta.Name || info.Meta.Version != d.meta.Version || info.Meta.Arch != d.meta.Arch:
		return nil, fmt.Errorf("check the disk image %s wrote: it carries extension-release.%s %s for %s", d.method, info.Name, info.Meta.Version, info.Meta.Arch)
	case dd.Designator != fsimage.DesignatorRoot || dd.Arch != d.meta.Arch || dd.Filesystem != fsimage.Format(d.fs):
		return nil, fmt.Errorf("check the disk image %s wrote: a %s %s partition for %s", d.method, dd.Filesystem, dd.Designator, dd.Arch)
	case dd.RootHash != rootHash:
		return nil, fmt.Errorf("check the disk image %s wrote: its partition UUIDs carry %s, not the root hash %s", d.method, dd.RootHash, rootHash)
	}
	if d.cert == nil {
		if dd.SignaturePartition() != nil {
			return nil, fmt.Errorf("check the disk image %s wrote: a signature partition nobody asked for", d.method)
		}
		return info, nil
	}
	if dd.Signature == nil {
		return nil, fmt.Errorf("check the disk image %s wrote: no readable signature partition: %v", d.method, dd.SignatureErr)
	}
	root, _ := hex.DecodeString(rootHash)
	if _, err := dd.Signature.Check(root, []*x509.Certificate{d.cert}); err != nil {
		return nil, fmt.Errorf("check the disk image %s wrote: %w", d.method, err)
	}
	return info, nil
}

// withRepart has systemd-repart build the whole image from the staged tree
// (the tree plus our extension-release and drop-ins, hard links).
func (d *ddiPlan) withRepart(ctx context.Context, work string) (image, rootHash string, warnings []string, err error) {
	warnings, _, _, added, err := sysextFiles(d.tree, d.meta, d.opts.Enable)
	if err != nil {
		return "", "", nil, err
	}
	staged := filepath.Join(work, "tree")
	if err := os.Mkdir(staged, 0o755); err != nil {
		return "", "", nil, err
	}
	if _, err := stage(ctx, d.tree, staged, d.keep); err != nil {
		return "", "", nil, err
	}
	for _, a := range added {
		if err := replaceFile(staged, a.path, a.content); err != nil {
			return "", "", nil, fmt.Errorf("stage %s: %w", a.path, err)
		}
	}
	defs := filepath.Join(work, "definitions")
	if err := os.Mkdir(defs, 0o755); err != nil {
		return "", "", nil, err
	}
	compression := d.compression
	if d.level != "" {
		compression += "\nCompressionLevel=" + d.level
	}
	if d.compression == "none" {
		compression = ""
	}
	files := map[string]string{
		"10-root.conf": "[Partition]\nType=root\nFormat=" + string(d.fs) + "\nCopyFiles=/\nVerity=data\nVerityMatchKey=root\nMinimize=best\nReadOnly=yes\n" +
			map[bool]string{true: "Compression=" + compression + "\n", false: ""}[compression != ""],
		"20-root-verity.conf": "[Partition]\nType=root-verity\nVerity=hash\nVerityMatchKey=root\nMinimize=best\nReadOnly=yes\n",
	}
	if d.key != nil {
		files["30-root-verity-sig.conf"] = "[Partition]\nType=root-verity-sig\nVerity=signature\nVerityMatchKey=root\n"
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(defs, name), []byte(content), 0o644); err != nil {
			return "", "", nil, err
		}
	}
	image = filepath.Join(work, "image.raw")
	seed := derived("repart seed", d.identity()...)
	args := []string{"--offline=yes", "--empty=create", "--size=auto", "--dry-run=no", "--no-pager", "--json=short",
		"--definitions=" + defs, "--copy-source=" + staged, "--seed=" + uuidOf(seed[:16]), "--architecture=" + string(d.meta.Arch)}
	if d.key != nil {
		args = append(args, "--private-key="+d.opts.SignKey, "--certificate="+d.opts.Certificate)
	}
	cmd, err := tool.Command(ctx, "systemd-repart", append(args, image)...)
	if err != nil {
		return "", "", nil, err
	}
	cmd.Env = append(toolEnv(), "SOURCE_DATE_EPOCH="+strconv.FormatInt(d.epoch, 10), "SYSTEMD_LOG_LEVEL=notice", "TMPDIR="+work)
	var stdout bytes.Buffer
	tail := &tool.Tail{}
	cmd.Stdout, cmd.Stderr = &stdout, tail
	if d.opts.Progress != nil {
		cmd.Stderr = io.MultiWriter(tail, d.opts.Progress)
	}
	if err := cmd.Run(); err != nil {
		return "", "", nil, fmt.Errorf("build %s: %w", d.target, tool.Failed("systemd-repart", err, tail))
	}
	m := regexp.MustCompile(`"roothash"\s*:\s*"([0-9a-f]{64})"`).FindSubmatch(stdout.Bytes())
	if m == nil {
		return "", "", nil, fmt.Errorf("build %s: systemd-repart reported no root hash", d.target)
	}
	return image, string(m[1]), warnings, nil
}

// phaseTimer reports to phaseHook (benchmarks) the time since it was made,
// or since its last report, under each name.
func phaseTimer() func(name string) {
	start := time.Now()
	return func(name string) {
		if phaseHook != nil {
			phaseHook(name, time.Since(start))
		}
		start = time.Now()
	}
}
