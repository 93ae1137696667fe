package builder

import (
	"cmp"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sysext/sysext/atomicfile"
	"github.com/sysext/sysext/extension"
	"github.com/sysext/sysext/fsimage"
	"github.com/sysext/sysext/internal/tool"
)

// Default compression per format: zstd squashfs is what distributions
// ship and every current kernel reads. lz4hc EROFS is what the Flatcar
// bakery uses and every EROFS kernel reads; lzma, deflate and zstd EROFS
// images are smaller and update with smaller deltas, but need Linux 5.16,
// 6.6 and 6.10 (docs/building.md), so a publisher chooses them.
const (
	DefaultSquashfsCompression = "zstd"
	DefaultEROFSCompression    = "lz4hc"
)

// EROFSPcluster is the physical cluster size of compressed EROFS images
// (mkfs.erofs -C): 64 KiB compresses each file in 64 KiB runs instead of
// 4 KiB ones, which made the delta workload's images 18% smaller and
// their updates 12% smaller (docs/delta-research.md, docs/building.md).
// Kernels read it since Linux 5.13 (big pclusters); systemd >= 252 hosts
// run newer ones.
const EROFSPcluster = 64 << 10

// Build checks opts and the tree, stages a view of the tree with the
// extension-release file and Upholds= drop-ins added, runs mksquashfs or
// mkfs.erofs on it, checks the image it wrote and renames it into place.
// It accepts any tree that CheckTree accepts, so other packages build by
// preparing a tree and calling Build. On any error or cancellation nothing
// is left: no temp file, no staging directory, no output.
func Build(ctx context.Context, opts Options) (*Result, error) {
	if opts.Format == DDI {
		return buildDDI(ctx, opts)
	}
	p, err := plan(ctx, opts)
	if err != nil {
		return nil, err
	}
	var (
		warnings []string
		rel      *extension.Release
		meta     extension.Metadata
		added    []dropIn // the files we add to the tree's content
	)
	if p.kind == KindConfext {
		meta = p.meta
		rel, added, err = confextFiles(p.tree, p.meta)
	} else {
		warnings, rel, meta, added, err = sysextFiles(p.tree, p.meta, opts.Enable)
	}
	if err != nil {
		return nil, err
	}
	keep, err := keepSet(p.tree, opts.KeepPrivileges)
	if err != nil {
		return nil, err
	}
	scanStart := time.Now()
	if p.drop, err = scanTree(ctx, p.tree, keep); err != nil {
		return nil, err
	}
	if phaseHook != nil {
		phaseHook("scan", time.Since(scanStart))
	}
	p.keep = keep
	warnings = append(warnings, droppedWarning(p.drop)...)

	// Everything we write lives in one directory next to the output, named
	// like a temp file and removed on every path: the image the tool
	// creates there (a file the tool creates is faster than one it
	// truncates, see atomicfile.Adopt) and, for EROFS, our files and the
	// overlay's mount point, or the staged tree.
	work, err := os.MkdirTemp(p.outDir, atomicfile.TempPrefix+filepath.Base(p.target)+".build-")
	if err != nil {
		return nil, fmt.Errorf("create a work directory in %s: %w", p.outDir, err)
	}
	defer os.RemoveAll(work)
	image := filepath.Join(work, "image.raw")
	name, staged, copied, err := p.runTool(ctx, work, added, image, opts.Progress)
	if staged != "" {
		defer os.RemoveAll(staged) // also when it is not under work
	}
	if err != nil {
		return nil, err
	}
	if copied > 0 {
		warnings = append(warnings, fmt.Sprintf("%d files were copied rather than linked into the staging directory (is %s on another filesystem than %s?)", copied, cmp.Or(p.stageDir, p.outDir), p.tree))
	}
	out, err := atomicfile.Adopt(p.target, image, 0o644)
	if err != nil {
		return nil, fmt.Errorf("build %s: %s: %w", p.target, name, err)
	}
	defer out.Close() // removes the image unless committed

	info, digest, err := p.readBack(ctx, out, name, staged, meta.Name, opts.Digest)
	if err != nil {
		return nil, err
	}
	if info.Name != meta.Name || !info.Release.Equal(rel) {
		return nil, fmt.Errorf("check the image %s wrote: it carries extension-release.%s with different content", name, info.Name)
	}
	commit := out.CommitUnsynced
	if p.sync {
		commit = out.Commit
	}
	if err := commit(opts.Force); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return nil, fmt.Errorf("%s already exists: use --force to replace it", p.target)
		}
		return nil, err
	}
	if digest != "" {
		info.Digest = digest
		fsimage.SetDigestCache(p.target, info.Digest)
	}
	return &Result{
		Path:     p.target,
		Format:   p.format,
		Size:     info.Size,
		Digest:   info.Digest,
		Meta:     meta,
		Release:  rel,
		Upholds:  info.Upholds,
		Warnings: warnings,

		Compression: info.Compression,
	}, nil
}

// readBack runs the jobs that follow the tool side by side, so the image
// costs little more than the tool itself: read the metadata back from the
// image (the caller checks it says what we meant), remove the staged tree,
// and, when asked, hash the image and flush it to disk. name is the tool's.
func (p *buildPlan) readBack(ctx context.Context, out *atomicfile.File, name, staged, extName string, wantDigest bool) (*fsimage.Info, string, error) {
	var (
		wg                      sync.WaitGroup
		info                    *fsimage.Info
		digest                  string
		infoErr, digErr, synErr error
	)
	timed := func(phase string, f func()) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			start := time.Now()
			f()
			if phaseHook != nil {
				phaseHook(phase, time.Since(start))
			}
		}()
	}
	read := func() { info, infoErr = fsimage.OpenMetadata(ctx, out.TempName()) }
	if p.kind == KindConfext {
		read = func() { info, infoErr = readConfext(ctx, out.TempName(), extName, p.format) }
	}
	timed("read-back", read)
	if wantDigest {
		timed("digest", func() { digest, digErr = fsimage.Digest(ctx, out.TempName(), false) })
	}
	if p.sync {
		timed("fsync", func() { synErr = out.Sync() })
	}
	if staged != "" {
		timed("cleanup", func() { os.RemoveAll(staged) })
	}
	wg.Wait()
	switch {
	case ctx.Err() != nil:
		return nil, "", fmt.Errorf("build %s: stopped, nothing was written: %w", p.target, ctx.Err())
	case infoErr != nil:
		return nil, "", fmt.Errorf("check the image %s wrote: %w", name, infoErr)
	case digErr != nil:
		return nil, "", digErr
	case synErr != nil:
		return nil, "", fmt.Errorf("fsync %s: %w", out.TempName(), synErr)
	}
	return info, digest, nil
}

// runTool makes the tool's source and runs the tool to write image: for
// EROFS on an overlay view when it can be set up (see overlay.go), else on
// a staged tree. It returns the tool's name, the staged tree to remove
// ("" when none) and how many files staging copied.
func (p *buildPlan) runTool(ctx context.Context, work string, added []dropIn, image string, progress io.Writer) (name, staged string, copied int, err error) {
	run := func(cmd *exec.Cmd, overlay *os.File) (setUp bool, tail *tool.Tail, err error) {
		cmd.Env = toolEnv()
		tail = &tool.Tail{}
		cmd.Stderr = tail
		cmd.Stdout = tail
		if progress != nil {
			cmd.Stdout = progress
		}
		start := time.Now()
		stopFlush := func() {}
		if p.sync {
			stopFlush = startWriteback(image)
		}
		if overlay != nil {
			setUp, err = runOverlay(cmd, overlay)
		} else {
			setUp, err = true, cmd.Run()
		}
		stopFlush()
		if phaseHook != nil {
			phaseHook("tool", time.Since(start))
		}
		return setUp, tail, err
	}
	failed := func(name string, err error, tail *tool.Tail) error {
		if ctx.Err() != nil {
			return fmt.Errorf("build %s: stopped, nothing was written: %w", p.target, ctx.Err())
		}
		return fmt.Errorf("build %s: %w", p.target, tool.Failed(name, err, tail))
	}

	if p.format == EROFS && !noOverlay {
		start := time.Now()
		view, err := newOverlayView(p.tree, work, added, p.drop)
		if phaseHook != nil {
			phaseHook("stage", time.Since(start))
		}
		switch {
		case errors.Is(err, errNoOverlay):
		case err != nil:
			return "", "", 0, err
		default:
			name, args := p.toolArgs(view.merged, image, progress != nil)
			cmd, ready, err := view.command(ctx, name, args)
			if errors.Is(err, errNoOverlay) {
				break
			}
			if err != nil {
				return name, "", 0, err
			}
			setUp, tail, err := run(cmd, ready)
			if setUp || ctx.Err() != nil {
				if err != nil {
					return name, "", 0, failed(name, err, tail)
				}
				return name, "", 0, nil
			}
			// No overlay here (user namespaces off, no overlayfs): stage.
			os.Remove(image)
		}
	}

	start := time.Now()
	src, extra, staged, copied, err := p.prepareSource(ctx, work, added)
	if phaseHook != nil {
		phaseHook("stage", time.Since(start))
	}
	if err != nil {
		return "", staged, copied, err
	}
	name, args := p.toolArgs(src, image, progress != nil)
	cmd, err := tool.Command(ctx, name, append(args, extra...)...)
	if err != nil {
		return name, staged, copied, err
	}
	if _, tail, err := run(cmd, nil); err != nil {
		return name, staged, copied, failed(name, err, tail)
	}
	return name, staged, copied, nil
}

// noOverlay turns the overlay view off (tests compare both ways).
var noOverlay = false

// sysextFiles checks a system extension's tree and returns the
// extension-release to write (the tree's own file, if any, with the
// build's fields on top) and the files to add: that file and the Upholds=
// drop-ins for enable.
func sysextFiles(tree string, m extension.Metadata, enable []string) ([]string, *extension.Release, extension.Metadata, []dropIn, error) {
	warnings, err := CheckTree(tree)
	if err != nil {
		return nil, nil, m, nil, err
	}
	theirs, err := existingRelease(tree, m.Name)
	if err != nil {
		return nil, nil, m, nil, err
	}
	rel, err := mergeRelease(filepath.Join(tree, filepath.FromSlash(extension.ReleasePath(m.Name))), theirs, m.Release())
	if err != nil {
		return nil, nil, m, nil, err
	}
	drops, err := dropIns(tree, m.Name, enable)
	if err != nil {
		return nil, nil, m, nil, err
	}
	meta, err := extension.MetadataFromRelease(m.Name, rel)
	if err != nil {
		return nil, nil, m, nil, err
	}
	added := []dropIn{{path: extension.ReleasePath(meta.Name), content: rel.Format()}}
	return warnings, rel, meta, append(added, drops...), nil
}

// startWriteback asks the kernel, while the tool writes the image at path,
// to start writing its dirty pages to disk, so the fsync before the rename
// has little left to wait for. It returns a function that stops it.
func startWriteback(path string) (stop func()) {
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(200 * time.Millisecond)
		defer t.Stop()
		var f *os.File // the tool creates the file after it starts
		defer func() {
			if f != nil {
				f.Close()
			}
		}()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				if f == nil {
					if f, _ = os.Open(path); f == nil {
						continue
					}
				}
				// Asynchronous: starts writeback, waits for nothing.
				_ = unix.SyncFileRange(int(f.Fd()), 0, 0, unix.SYNC_FILE_RANGE_WRITE)
			}
		}
	}()
	return func() {
		close(done)
		<-finished
	}
}

// phaseHook, when set (by benchmarks), receives the duration of each phase.
var phaseHook func(phase string, d time.Duration)

// buildPlan is opts checked and completed.
type buildPlan struct {
	kind        Kind
	tree        string
	meta        extension.Metadata
	format      ImageFormat
	compression string
	level       string
	epoch       int64
	sync        bool            // flush before the rename: opts.Sync, or a merge directory
	stageDir    string          // opts.StageDir
	keep        map[string]bool // opts.KeepPrivileges, checked
	drop        []privileged    // files that lose their privileges in the image
	outDir      string
	target      string
}

// plan validates everything that does not need the tree, so a bad flag
// fails before any work.
func plan(ctx context.Context, opts Options) (*buildPlan, error) {
	p := &buildPlan{kind: opts.Kind, meta: opts.Meta, format: opts.Format, epoch: opts.SourceDateEpoch, sync: opts.Sync, stageDir: opts.StageDir}
	switch p.kind {
	case "":
		p.kind = KindSysext
	case KindSysext:
	case KindConfext:
		if len(opts.Enable) > 0 {
			return nil, invalid(errors.New("--enable: a confext carries configuration only; units belong in a system extension"))
		}
	default:
		return nil, invalid(fmt.Errorf("unknown image kind %q: use sysext or confext", p.kind))
	}
	if opts.Tree == "" {
		return nil, invalid(errors.New("no tree given: name the directory to build from"))
	}
	tree, err := filepath.Abs(opts.Tree)
	if err != nil {
		return nil, err
	}
	p.tree = tree
	if p.format == "" {
		p.format = Squashfs
	}
	if p.format != Squashfs && p.format != EROFS {
		return nil, invalid(fmt.Errorf("unknown format %q: use squashfs, erofs or ddi (--format)", p.format))
	}
	if p.meta.ID == "" {
		p.meta.ID = extension.AnyID
	}
	if p.meta.Arch == "" {
		p.meta.Arch = extension.HostArch()
	} else if !p.meta.Arch.Valid() {
		a, err := extension.ParseArch(string(p.meta.Arch))
		if err != nil {
			return nil, invalid(fmt.Errorf("--arch: %w", err))
		}
		p.meta.Arch = a
	}
	if p.meta.Version == "" {
		return nil, invalid(fmt.Errorf("extension %s has no version: give one with --version", p.meta.Name))
	}
	if len(opts.Enable) > 0 {
		p.meta.ReloadManager = true
	}
	if err := p.meta.Validate(); err != nil {
		return nil, invalid(err)
	}
	if p.meta.ID == extension.AnyID && (p.meta.SysextLevel != "" || p.meta.VersionID != "") {
		return nil, invalid(errors.New("--sysext-level and --version-id need --os ID: with ID=_any systemd-sysext ignores them"))
	}
	if p.meta.ID != extension.AnyID && p.meta.VersionID == "" && p.meta.SysextLevel == "" {
		return nil, invalid(fmt.Errorf("--os %s: systemd-sysext then also needs the OS version: give --sysext-level or --version-id (or use --os _any)", p.meta.ID))
	}
	if p.epoch < 0 || p.epoch > 1<<32-1 {
		return nil, invalid(fmt.Errorf("SOURCE_DATE_EPOCH=%d: use seconds since 1970 that fit in 32 bits (the image formats' limit)", p.epoch))
	}
	if err := p.parseCompression(opts.Compression); err != nil {
		return nil, invalid(err)
	}
	if err := p.resolveOutput(opts.Output, opts.Force); err != nil {
		return nil, err
	}
	toolName := "mksquashfs"
	if p.format == EROFS {
		toolName = "mkfs.erofs"
	}
	path, err := tool.Look(toolName)
	if err != nil {
		return nil, err
	}
	if p.format == EROFS {
		if err := checkEROFSCompressor(ctx, path, p.compression); err != nil {
			return nil, invalid(err)
		}
	}
	return p, nil
}

// CheckOptions checks the options that do not need the tree (format,
// compression, architecture, metadata), as Build does first, so a caller
// that prepares the tree itself (bake, from-image) refuses a bad flag
// before any download. Its errors wrap ErrInvalidOption.
func CheckOptions(opts Options) error {
	if opts.Tree == "" {
		opts.Tree = "."
	}
	// plan checks the options before anything else; what it says after
	// them (the output, the tool) is Build's business.
	if opts.Format == DDI {
		// A disk image's filesystem is checked as that filesystem.
		if opts.Filesystem == "" {
			opts.Filesystem = DefaultDDIFilesystem
		}
		if opts.Filesystem != EROFS && opts.Filesystem != Squashfs {
			return invalid(fmt.Errorf("--fs %s: a DDI's root partition is erofs or squashfs", opts.Filesystem))
		}
		opts.Format = opts.Filesystem
	}
	if _, err := plan(context.Background(), opts); errors.Is(err, ErrInvalidOption) {
		return err
	}
	return nil
}

// ErrInvalidOption is wrapped by every error about a bad option value
// (format, compression, architecture, metadata fields): the caller's input,
// refused before any work.
var ErrInvalidOption = errors.New("invalid build option")

// optionError keeps the message of a bad option and says ErrInvalidOption.
type optionError struct{ err error }

func (e *optionError) Error() string { return e.err.Error() }
func (e *optionError) Unwrap() error { return ErrInvalidOption }

func invalid(err error) error { return &optionError{err} }

var compressions = map[ImageFormat][]string{
	Squashfs: {"gzip", "xz", "lzo", "lz4", "zstd", "none"},
	EROFS:    {"lz4", "lz4hc", "lzma", "deflate", "zstd", "none"},
}

// erofsLevels are the levels mkfs.erofs takes per compressor (lz4 takes
// none); lzma's 100-109 are its "extreme" presets.
var erofsLevels = map[string]func(int) bool{
	"lz4hc":   func(n int) bool { return n <= 12 },
	"lzma":    func(n int) bool { return n <= 9 || n >= 100 && n <= 109 },
	"deflate": func(n int) bool { return n <= 9 },
	"zstd":    func(n int) bool { return n <= 22 },
}

// Compressions lists the algorithms --compression takes for a format
// (each also as ALG:LEVEL); nil for a format builder does not write.
func Compressions(f ImageFormat) []string {
	return append([]string(nil), compressions[f]...)
}

// parseCompression accepts ALG or ALG:LEVEL ("zstd:19", "lz4hc:12").
func (p *buildPlan) parseCompression(s string) error {
	if s == "" {
		s = DefaultSquashfsCompression
		if p.format == EROFS {
			s = DefaultEROFSCompression
		}
	}
	alg, level, hasLevel := strings.Cut(s, ":")
	ok := false
	for _, a := range compressions[p.format] {
		ok = ok || a == alg
	}
	if !ok {
		return fmt.Errorf("--compression %s: %s images take %s, optionally with :LEVEL", s, p.format, strings.Join(compressions[p.format], ", "))
	}
	if hasLevel {
		n, err := strconv.Atoi(level)
		inRange := err == nil && n >= 0 && n <= 22 && alg != "none"
		if p.format == EROFS {
			ok := erofsLevels[alg]
			inRange = err == nil && n >= 0 && ok != nil && ok(n)
		}
		if !inRange {
			return fmt.Errorf("--compression %s: the level must be a number the algorithm accepts", s)
		}
	}
	p.compression, p.level = alg, level
	return nil
}

// OutputPath is the absolute image path for --output: fileName in the
// current directory when output is empty, in output when it is an existing
// directory or ends in '/', else output itself. The directory it lands in
// must exist. Callers that refuse a bad output early (recipe bake) use it
// so they agree with Build.
func OutputPath(output, fileName string) (string, error) {
	switch {
	case output == "":
		output = fileName
	case strings.HasSuffix(output, "/"):
		output = filepath.Join(output, fileName)
	default:
		if fi, err := os.Stat(output); err == nil && fi.IsDir() {
			output = filepath.Join(output, fileName)
		}
	}
	target, err := filepath.Abs(output)
	if err != nil {
		return "", err
	}
	if fi, err := os.Stat(filepath.Dir(target)); err != nil || !fi.IsDir() {
		return "", fmt.Errorf("output directory %s does not exist: create it or choose another --output", filepath.Dir(target))
	}
	return target, nil
}

// resolveOutput picks the target file: NAME-VERSION-ARCH.raw in the
// current directory, in --output when it is a directory, or --output.
func (p *buildPlan) resolveOutput(output string, force bool) error {
	target, err := OutputPath(output, extension.FileName(p.meta.Name, p.meta.Version, p.meta.Arch))
	if err != nil {
		return err
	}
	p.target = target
	p.outDir = filepath.Dir(target)
	p.sync = p.sync || extension.IsMergeDir(p.outDir)
	// The staging directory and the image live next to the output: inside
	// the tree they would change the input and end up in the image.
	realTree, err1 := filepath.EvalSymlinks(p.tree)
	realOut, err2 := filepath.EvalSymlinks(p.outDir)
	if err1 == nil && err2 == nil && (realOut == realTree || strings.HasPrefix(realOut, realTree+string(filepath.Separator))) {
		return fmt.Errorf("output %s is inside the tree %s: write the image elsewhere (--output)", p.target, p.tree)
	}
	if fi, err := os.Lstat(p.target); err == nil {
		if fi.IsDir() {
			return fmt.Errorf("output %s is a directory", p.target)
		}
		if !force {
			return fmt.Errorf("%s already exists: use --force to replace it", p.target)
		}
	}
	return nil
}

// toolArgs returns the command that writes the image from dir to out,
// reproducibly: all files owned by root, every timestamp the epoch, a
// fixed UUID, sorted entries (both tools sort directories).
func (p *buildPlan) toolArgs(dir, out string, progress bool) (string, []string) {
	epoch := strconv.FormatInt(p.epoch, 10)
	if p.format == EROFS {
		args := []string{"--all-root", "-T" + epoch, "-U" + p.uuid()}
		if p.compression != "none" {
			z := "-z" + p.compression
			if p.level != "" {
				z += "," + p.level
			}
			args = append(args, z, "-C"+strconv.Itoa(EROFSPcluster))
		}
		if !progress {
			args = append(args, "--quiet")
		}
		return "mkfs.erofs", append(args, out, dir)
	}
	args := []string{dir, out, "-noappend", "-all-root", "-root-mode", "0755", "-reproducible", "-mkfs-time", epoch, "-all-time", epoch}
	if p.compression == "none" {
		args = append(args, "-noI", "-noId", "-noD", "-noF", "-noX")
	} else {
		args = append(args, "-comp", p.compression)
		if p.level != "" {
			args = append(args, "-Xcompression-level", p.level)
		}
	}
	if !progress {
		args = append(args, "-quiet", "-no-progress")
	}
	return "mksquashfs", args
}

// uuid derives the filesystem UUID from the extension's identity: fixed for
// reproducibility, yet different between extensions.
func (p *buildPlan) uuid() string {
	kind := "sysext" // unchanged for system extensions: same bytes as before
	if p.kind == KindConfext {
		kind = string(KindConfext) // a confext of the same NAME gets another UUID
	}
	h := sha256.Sum256([]byte(kind + "\x00" + p.meta.Name + "\x00" + p.meta.Version + "\x00" + string(p.meta.Arch)))
	h[6] = h[6]&0x0f | 0x40 // version 4 layout, RFC 4122 variant
	h[8] = h[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", h[0:4], h[4:6], h[6:8], h[8:10], h[10:16])
}

// toolEnv drops SOURCE_DATE_EPOCH, which mksquashfs refuses next to
// explicit times; the epoch is passed as flags.
func toolEnv() []string {
	var env []string
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, "SOURCE_DATE_EPOCH=") {
			env = append(env, e)
		}
	}
	return env
}
