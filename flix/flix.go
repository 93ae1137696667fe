package flix

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sort"
	"strings"

	"github.com/sysext/sysext/builder"
	"github.com/sysext/sysext/extension"
	"github.com/sysext/sysext/internal/extract"
	"golang.org/x/sys/unix"
)

// FlixPrefix is the directory under which each Flix extension keeps its
// loader and libraries: /usr/lib/sysext-flix/NAME/.
const FlixPrefix = "/usr/lib/sysext-flix"

// Program is one program to pack: Path in the rootfs, Dest in the
// extension ("" means Path, or the path Path resolves to, when that is
// under /usr or /opt).
type Program struct {
	Path string
	Dest string
}

// ParseProgram parses "PATH[:DEST]".
func ParseProgram(s string) (Program, error) {
	p, d, _ := strings.Cut(s, ":")
	if !strings.HasPrefix(p, "/") {
		return Program{}, fmt.Errorf("program %q: give its absolute path inside the rootfs, as in /usr/bin/tool", s)
	}
	if d != "" {
		if err := checkDest(d); err != nil {
			return Program{}, fmt.Errorf("program %q: %w", s, err)
		}
	}
	return Program{Path: path.Clean(p), Dest: cleanDest(d)}, nil
}

func cleanDest(d string) string {
	if d == "" {
		return ""
	}
	return path.Clean(d)
}

// programDest is where p goes: its DEST, else its path or (for a link) its
// target's path when that is under /usr or /opt. what names the thing
// placed there in the error ("it", "its wrapper").
func programDest(p Program, real, what string) (string, error) {
	if p.Dest != "" {
		return p.Dest, nil
	}
	switch {
	case checkDest(p.Path) == nil:
		return p.Path, nil
	case checkDest("/"+real) == nil:
		return "/" + real, nil
	}
	return "", fmt.Errorf("%s is not under /usr or /opt: say where %s goes, as in %s:/usr/bin/%s", p.Path, what, p.Path, path.Base(p.Path))
}

// checkDest accepts an absolute path under /usr or /opt, the only places
// systemd-sysext merges.
func checkDest(d string) error {
	if !strings.HasPrefix(d, "/") {
		return fmt.Errorf("destination %q must be absolute, under /usr or /opt", d)
	}
	for _, c := range strings.Split(d, "/") {
		if c == ".." {
			return fmt.Errorf("destination %q must not contain '..'", d)
		}
	}
	c := path.Clean(d)
	if !strings.HasPrefix(c, "/usr/") && !strings.HasPrefix(c, "/opt/") {
		return fmt.Errorf("destination %q is not under /usr or /opt, the only places systemd-sysext merges: give PATH:/usr/bin/NAME", d)
	}
	if strings.HasPrefix(c, "/usr/lib/extension-release.d/") {
		return fmt.Errorf("destination %q is the extension's metadata directory", d)
	}
	return nil
}

// Options say what to pack from a rootfs. Flix and Flatwrap share them.
type Options struct {
	Rootfs    string         // the root filesystem (e.g. made by Rootfs)
	Name      string         // the extension's name
	Programs  []Program      // what to make runnable from /usr
	ExtraLibs []string       // Flix: libraries loaded with dlopen (paths in the rootfs, or names)
	Arch      extension.Arch // "" = the host's
	Wrap      WrapOptions    // Flatwrap only
	// KeepPrivileges lists programs (paths in the rootfs) that keep their
	// set-user-ID/set-group-ID bits and file capabilities in the image;
	// every other file loses them.
	KeepPrivileges []string
	Stderr         io.Writer // notes (nil discards)
}

func (o *Options) check() (elfArch, error) {
	if err := extension.ValidateName(o.Name); err != nil {
		return elfArch{}, err
	}
	if len(o.Programs) == 0 {
		return elfArch{}, errors.New("no programs given: name at least one PATH inside the rootfs")
	}
	fi, err := os.Stat(o.Rootfs)
	if err != nil {
		return elfArch{}, fmt.Errorf("rootfs: %w", err)
	}
	if !fi.IsDir() {
		return elfArch{}, fmt.Errorf("rootfs %s is not a directory", o.Rootfs)
	}
	if o.Arch == "" {
		o.Arch = extension.HostArch()
	}
	a, ok := elfArches[o.Arch]
	if !ok {
		return elfArch{}, fmt.Errorf("architecture %q: give the programs' architecture with --arch (x86-64, arm64, ...)", o.Arch)
	}
	if o.Stderr == nil {
		o.Stderr = io.Discard
	}
	return a, nil
}

// bundler collects one Flix extension in a staging tree.
type bundler struct {
	ctx     context.Context
	opts    *Options
	r       *extract.Root
	arch    elfArch
	paths   []string
	tree    string
	priv    string            // FlixPrefix/NAME
	placed  map[string]string // dest -> source rel path (nothing placed twice)
	libs    map[string]bool   // library names bundled
	interps map[string]string // interpreter real rel path -> dest
	progs   map[string]*elfInfo
	libDest map[string]string // dest -> real rel of libraries to patch
	keep    map[string]bool   // real paths ("/usr/bin/su") to keep privileges of; true until packed
	kept    map[string]string // dest -> real rel of programs that keep them
}

// StageFlix writes opts' programs, their loader and every library they
// need into tree (an empty directory): programs at their /usr paths,
// loader and libraries in FlixPrefix/NAME, patched with patchelf so that
// nothing is looked up in the host's libraries.
//
// Programs are copied without set-user-ID/set-group-ID bits and file
// capabilities, except those named in opts.KeepPrivileges, which get
// them back after patchelf (writing a file clears them).
func StageFlix(ctx context.Context, tree string, opts Options) error {
	_, err := stageFlix(ctx, tree, opts)
	return err
}

// stageFlix is StageFlix; it returns the image paths of the programs that
// keep their privileges.
func stageFlix(ctx context.Context, tree string, opts Options) ([]string, error) {
	a, err := opts.check()
	if err != nil {
		return nil, err
	}
	if _, err := exec.LookPath("patchelf"); err != nil {
		return nil, errors.New("flix needs patchelf: install it (Debian and Fedora package patchelf)")
	}
	r, keep, err := openRootfs(opts)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	b := &bundler{
		ctx: ctx, opts: &opts, r: r, arch: a, paths: searchPaths(r, a), tree: tree,
		priv:   FlixPrefix + "/" + opts.Name,
		placed: map[string]string{}, libs: map[string]bool{}, interps: map[string]string{},
		progs: map[string]*elfInfo{}, libDest: map[string]string{},
		keep: map[string]bool{}, kept: map[string]string{},
	}
	for _, k := range keep {
		b.keep[k] = true
	}
	for _, p := range opts.Programs {
		if err := b.program(p); err != nil {
			return nil, err
		}
	}
	for _, k := range keep {
		if b.keep[k] {
			return nil, fmt.Errorf("--keep-privileges %s: not one of the programs packed (flix keeps the privileges of programs only)", k)
		}
	}
	for _, l := range opts.ExtraLibs {
		if err := b.extraLib(l); err != nil {
			return nil, err
		}
	}
	if err := b.patch(); err != nil {
		return nil, err
	}
	return b.restorePrivileges()
}

// openRootfs opens opts.Rootfs (links never followed out of it) and
// resolves opts.KeepPrivileges inside it (resolveKeep).
func openRootfs(opts Options) (*extract.Root, []string, error) {
	r, err := extract.OpenRoot(opts.Rootfs, false)
	if err != nil {
		return nil, nil, err
	}
	keep, err := resolveKeep(r, opts.KeepPrivileges)
	if err != nil {
		r.Close()
		return nil, nil, err
	}
	return r, keep, nil
}

// resolveKeep resolves the paths to keep privileges of inside the rootfs
// ("/bin/su" may be "/usr/bin/su"); each must be a regular file.
func resolveKeep(r *extract.Root, keep []string) ([]string, error) {
	var out []string
	for _, k := range keep {
		real, err := r.ResolveFile(k)
		if err == nil {
			var fi os.FileInfo
			if fi, err = os.Lstat(r.Abs(real)); err == nil && !fi.Mode().IsRegular() {
				err = errors.New("not a regular file")
			}
		}
		if err != nil {
			return nil, fmt.Errorf("--keep-privileges %s: not a file of %s: %w", k, r.Dir(), notFound(err))
		}
		out = append(out, "/"+real)
	}
	return out, nil
}

// restorePrivileges gives the programs the user named their set-ID bits
// and capabilities back, after patchelf, and returns their image paths.
func (b *bundler) restorePrivileges() ([]string, error) {
	var dests []string
	for dest, real := range b.kept {
		src := b.r.Abs(real)
		fi, err := os.Stat(src)
		if err != nil {
			return nil, err
		}
		p := filepath.Join(b.tree, dest)
		if err := os.Chmod(p, fi.Mode()&(os.ModePerm|os.ModeSetuid|os.ModeSetgid)); err != nil {
			return nil, err
		}
		if v, err := getxattr(src, extract.CapabilityXattr); err == nil {
			if err := unix.Setxattr(p, extract.CapabilityXattr, v, 0); err != nil {
				return nil, fmt.Errorf("keep the capabilities of %s: %w", dest, err)
			}
		}
		dests = append(dests, dest)
	}
	sort.Strings(dests)
	return dests, nil
}

func getxattr(p, name string) ([]byte, error) {
	n, err := unix.Getxattr(p, name, nil)
	if err != nil {
		return nil, err
	}
	v := make([]byte, n)
	n, err = unix.Getxattr(p, name, v)
	return v[:n], err
}

func (b *bundler) program(p Program) error {
	rel := strings.TrimPrefix(p.Path, "/")
	real, err := b.r.ResolveFile(rel)
	if err != nil {
		return fmt.Errorf("%s: not in %s: %w", p.Path, b.opts.Rootfs, notFound(err))
	}
	src := b.r.Abs(real)
	fi, err := os.Stat(src)
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file", p.Path)
	}
	info, err := readELF(src)
	if errors.Is(err, ErrNotELF) {
		return fmt.Errorf("%s: %w: flix bundles ELF programs only; 'sysext flatwrap' runs any program in its own root", p.Path, err)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", p.Path, err)
	}
	if !b.arch.matches(info) {
		return fmt.Errorf("%s is a program for %s, not %s: give its architecture with --arch", p.Path, info.describe(), b.opts.Arch)
	}
	dest, err := programDest(p, real, "it")
	if err != nil {
		return err
	}
	// A symlinked program stays a link: the file it points to is what gets
	// patched, placed at its own /usr path (or in the private directory).
	isLink := b.r.IsSymlink(rel)
	target := dest
	if isLink {
		target = "/" + real
		if checkDest(target) != nil {
			target = b.priv + "/bin/" + path.Base(real)
		}
		if target == dest {
			isLink = false
		}
	}
	if err := b.place(real, target, true); err != nil {
		return err
	}
	b.progs[target] = info
	if _, ok := b.keep["/"+real]; ok {
		b.keep["/"+real] = false
		b.kept[target] = real
	}
	if isLink {
		if err := b.link(dest, target); err != nil {
			return err
		}
	}
	if info.static() {
		fmt.Fprintf(b.opts.Stderr, "sysext: %s is static: copied as it is\n", p.Path)
		return nil
	}
	if info.interp != "" {
		if err := b.interp(p.Path, info.interp); err != nil {
			return err
		}
	}
	return b.deps(p.Path, info, path.Dir(real), info.rpath, path.Dir(real))
}

// place copies rel (a resolved path in the rootfs) to dest in the tree,
// once.
func (b *bundler) place(rel, dest string, exec bool) error {
	if have, ok := b.placed[dest]; ok {
		if have == rel {
			return nil
		}
		return fmt.Errorf("%s: both /%s and /%s would go there: give one another destination", dest, have, rel)
	}
	b.placed[dest] = rel
	return copyFile(b.r.Abs(rel), filepath.Join(b.tree, dest))
}

func (b *bundler) link(dest, target string) error {
	if have, ok := b.placed[dest]; ok {
		return fmt.Errorf("%s: both /%s and a link to %s would go there", dest, have, target)
	}
	b.placed[dest] = "->" + target
	p := filepath.Join(b.tree, dest)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	l, err := filepath.Rel(path.Dir(dest), target)
	if err != nil {
		return err
	}
	return os.Symlink(l, p)
}

func (b *bundler) interp(prog, interp string) error {
	real, err := b.r.ResolveFile(strings.TrimPrefix(interp, "/"))
	if err != nil {
		return fmt.Errorf("%s needs the loader %s, which is not in %s: %w", prog, interp, b.opts.Rootfs, err)
	}
	if _, ok := b.interps[real]; ok {
		return nil
	}
	info, err := readELF(b.r.Abs(real))
	if err != nil || !b.arch.matches(info) {
		return fmt.Errorf("%s needs the loader %s, but %s in the rootfs is not a %s ELF file", prog, interp, interp, b.opts.Arch)
	}
	dest := b.priv + "/" + path.Base(interp)
	b.interps[real] = dest
	return b.place(real, dest, true)
}

// deps bundles every library info needs, recursively. origin is the
// directory of the requesting file in the rootfs ($ORIGIN); exeRpath and
// exeOrigin are the program's DT_RPATH, which glibc also applies to its
// libraries' lookups.
func (b *bundler) deps(prog string, info *elfInfo, origin string, exeRpath []string, exeOrigin string) error {
	for _, name := range info.needed {
		if b.libs[name] {
			continue
		}
		real, found, linfo, err := b.find(name, info, origin, exeRpath, exeOrigin)
		if err != nil {
			return fmt.Errorf("%s needs %s: %w", prog, name, err)
		}
		b.libs[name] = true
		dest := b.priv + "/" + path.Base(name)
		if err := b.place(real, dest, false); err != nil {
			return err
		}
		if _, isInterp := b.interps[real]; !isInterp {
			b.libDest[dest] = real
		}
		// $ORIGIN is the directory the loader found the library in, not
		// where a symlink there points (glibc and musl agree).
		if err := b.deps(prog, linfo, path.Dir(found), exeRpath, exeOrigin); err != nil {
			return err
		}
	}
	return nil
}

// find looks a library up inside the rootfs as the dynamic loader would:
// the requester's DT_RPATH (and the program's) unless it has a DT_RUNPATH,
// then its DT_RUNPATH, then ld.so.conf and the usual directories.
// It returns the resolved path, the path it was found at, and its ELF
// information.
func (b *bundler) find(name string, req *elfInfo, origin string, exeRpath []string, exeOrigin string) (string, string, *elfInfo, error) {
	var dirs []string
	if strings.Contains(name, "/") {
		dirs = []string{""}
	} else {
		if len(req.runpath) == 0 {
			dirs = append(dirs, b.expand(req.rpath, origin)...)
			dirs = append(dirs, b.expand(exeRpath, exeOrigin)...)
		}
		dirs = append(dirs, b.expand(req.runpath, origin)...)
		dirs = append(dirs, b.paths...)
	}
	var wrongArch []string
	for _, d := range dirs {
		cand := strings.TrimPrefix(path.Join("/", d, name), "/")
		real, err := b.r.ResolveFile(cand)
		if err != nil {
			continue
		}
		fi, err := os.Stat(b.r.Abs(real))
		if err != nil || !fi.Mode().IsRegular() {
			continue
		}
		info, err := readELF(b.r.Abs(real))
		if err != nil {
			continue
		}
		if !b.arch.matches(info) {
			wrongArch = append(wrongArch, "/"+cand+" ("+info.describe()+")")
			continue
		}
		return real, cand, info, nil
	}
	msg := fmt.Sprintf("not found in %s (searched %s)", b.opts.Rootfs, strings.Join(dirs, ", "))
	if len(wrongArch) > 0 {
		msg += "; found only for another architecture: " + strings.Join(wrongArch, ", ")
	}
	return "", "", nil, errors.New(msg + ": install it in the rootfs, or name it with --extra-lib")
}

// expand turns RPATH/RUNPATH entries into rootfs directories: $ORIGIN is
// the requester's directory, $LIB the usual library directories, and
// relative entries (relative to the caller's working directory, a bug in
// the binary) are skipped.
func (b *bundler) expand(entries []string, origin string) []string {
	var out []string
	for _, e := range entries {
		e = strings.ReplaceAll(e, "${ORIGIN}", "$ORIGIN")
		e = strings.ReplaceAll(e, "$ORIGIN", "/"+origin)
		e = strings.ReplaceAll(e, "${LIB}", "$LIB")
		if strings.Contains(e, "$LIB") {
			for _, l := range []string{"lib/" + b.arch.triplet, "lib64", "lib"} {
				out = append(out, strings.ReplaceAll(e, "$LIB", l))
			}
			continue
		}
		if strings.Contains(e, "$") || !strings.HasPrefix(e, "/") {
			continue
		}
		out = append(out, e)
	}
	return out
}

func (b *bundler) extraLib(l string) error {
	info := &elfInfo{needed: []string{l}}
	if strings.Contains(l, "/") {
		// A path: bundle it under its own name.
		real, found, linfo, err := b.find(strings.TrimPrefix(l, "/"), info, "", nil, "")
		if err != nil {
			return fmt.Errorf("--extra-lib %s: %w", l, err)
		}
		name := path.Base(l)
		if b.libs[name] {
			return nil
		}
		b.libs[name] = true
		dest := b.priv + "/" + name
		if err := b.place(real, dest, false); err != nil {
			return err
		}
		b.libDest[dest] = real
		return b.deps("--extra-lib "+l, linfo, path.Dir(found), nil, "")
	}
	return b.deps("--extra-lib "+l, info, "", nil, "")
}

// patch rewrites the programs' interpreter and search path (DT_RPATH, so
// that it also applies to their libraries' lookups) and gives every
// bundled library a DT_RUNPATH of $ORIGIN: the private directory.
func (b *bundler) patch() error {
	dests := make([]string, 0, len(b.progs))
	for d := range b.progs {
		dests = append(dests, d)
	}
	sort.Strings(dests)
	for _, d := range dests {
		info := b.progs[d]
		if info.static() {
			continue
		}
		var args []string
		if info.interp != "" {
			args = append(args, "--set-interpreter", b.priv+"/"+path.Base(info.interp))
		}
		args = append(args, "--force-rpath", "--set-rpath", b.priv)
		if err := b.patchelf(d, args...); err != nil {
			return err
		}
	}
	libs := make([]string, 0, len(b.libDest))
	for d := range b.libDest {
		libs = append(libs, d)
	}
	sort.Strings(libs)
	for _, d := range libs {
		if err := b.patchelf(d, "--set-rpath", "$ORIGIN"); err != nil {
			return err
		}
	}
	return nil
}

// patchelf runs patchelf on dest in the tree. The old search path is
// removed first: patchelf before 0.15 (Debian 12 has 0.14) overwrites the
// old string with X's, and linkers share string-table tails, so a symbol
// named like the end of the old path ("greet" in ".../greet") broke.
func (b *bundler) patchelf(dest string, args ...string) error {
	p := filepath.Join(b.tree, dest)
	for _, a := range [][]string{{"--remove-rpath"}, args} {
		out, err := exec.CommandContext(b.ctx, "patchelf", append(a, p)...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("patchelf %s %s: %v: %s", strings.Join(a, " "), dest, err, strings.TrimSpace(string(out)))
		}
	}
	return nil
}

// copyFile copies a regular file's content and permission bits, creating
// the destination's directories. The destination must not exist.
func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	fi, err := in.Stat()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	// Owner-writable so patchelf can rewrite it; the image is built
	// all-root anyway.
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, fi.Mode().Perm()|0o200)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	if err := out.Chmod(fi.Mode().Perm() | 0o200); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// notFound shortens a missing path's error: the caller names the path.
func notFound(err error) error {
	if errors.Is(err, os.ErrNotExist) {
		return os.ErrNotExist
	}
	return err
}

// Flix stages opts' programs (see StageFlix) in a temp directory and
// builds the extension image with bo (its Tree is set here). Nothing is
// written on any error.
func Flix(ctx context.Context, opts Options, bo builder.Options) (*builder.Result, error) {
	return buildStaged(ctx, opts, bo, stageFlix)
}

// buildStaged stages opts with stageFn, which returns the image paths that
// keep their privileges, and builds the image.
func buildStaged(ctx context.Context, opts Options, bo builder.Options, stageFn func(context.Context, string, Options) ([]string, error)) (*builder.Result, error) {
	tree, err := os.MkdirTemp("", "sysext-stage-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tree)
	if err := os.Chmod(tree, 0o755); err != nil {
		return nil, err
	}
	keep, err := stageFn(ctx, tree, opts)
	if err != nil {
		return nil, err
	}
	bo.Tree = tree
	bo.KeepPrivileges = keep
	if bo.Meta.Name == "" {
		bo.Meta.Name = opts.Name
	}
	return builder.Build(ctx, bo)
}
