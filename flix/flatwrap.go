package flix

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/sysext/sysext/builder"
)

// FlatwrapPrefix is the directory under which each Flatwrap extension
// keeps its copy of the rootfs: /usr/lib/sysext-flatwrap/NAME/.
const FlatwrapPrefix = "/usr/lib/sysext-flatwrap"

// Map values for /etc, /var and /home.
const (
	FromHost   = "host"
	FromChroot = "chroot"
)

// Defaults as the seeds' flatwrap.sh has them.
var (
	DefaultChrootDirs = []string{"/usr", "/lib", "/lib64", "/bin", "/sbin"}
	DefaultHostDirs   = []string{"/dev", "/proc", "/sys", "/run", "/tmp", "/var/tmp"}
)

// WrapOptions say which directories a wrapped program sees from the host
// and which from its own root. Everything not taken from the host comes
// from the root.
type WrapOptions struct {
	Etc, Var, Home string   // FromHost (default) or FromChroot
	ChrootDirs     []string // kept from the root; nil = DefaultChrootDirs
	HostDirs       []string // bound from the host; nil = DefaultHostDirs
	Env            []string // defaults for the program's environment (the image's Env)
}

// HostBinds returns, in mount order, the host directories bound into the
// root, checked against the chroot list.
func (w *WrapOptions) HostBinds() ([]string, error) {
	if w.ChrootDirs == nil {
		w.ChrootDirs = DefaultChrootDirs
	}
	if w.HostDirs == nil {
		w.HostDirs = DefaultHostDirs
	}
	var binds []string
	for _, m := range []struct {
		flag, v string
		dirs    []string
	}{{"--etc", w.Etc, []string{"/etc"}}, {"--var", w.Var, []string{"/var"}}, {"--home", w.Home, []string{"/home", "/root"}}} {
		switch m.v {
		case "", FromHost:
			binds = append(binds, m.dirs...)
		case FromChroot:
		default:
			return nil, fmt.Errorf("%s %q: use host or chroot", m.flag, m.v)
		}
	}
	chroot := map[string]bool{}
	for _, d := range w.ChrootDirs {
		if err := checkAbsDir(d); err != nil {
			return nil, fmt.Errorf("--chroot-dirs: %w", err)
		}
		chroot[path.Clean(d)] = true
	}
	for _, d := range w.HostDirs {
		if err := checkAbsDir(d); err != nil {
			return nil, fmt.Errorf("--host-dirs: %w", err)
		}
		binds = append(binds, path.Clean(d))
	}
	seen := map[string]bool{}
	out := binds[:0]
	for _, d := range binds {
		if chroot[d] {
			return nil, fmt.Errorf("%s is both a chroot and a host directory: choose one", d)
		}
		if !seen[d] {
			seen[d] = true
			out = append(out, d)
		}
	}
	// Parents before children, so /var/tmp lands on top of /var.
	sort.SliceStable(out, func(i, j int) bool { return strings.Count(out[i], "/") < strings.Count(out[j], "/") })
	return out, nil
}

func checkAbsDir(d string) error {
	if !strings.HasPrefix(d, "/") || d == "/" || strings.Contains(d, "..") || strings.ContainsAny(d, "'\n") {
		return fmt.Errorf("%q: give an absolute directory other than /", d)
	}
	return nil
}

// StageFlatwrap copies the rootfs into FlatwrapPrefix/NAME in tree and
// writes, at each program's /usr path, a /bin/sh wrapper that runs it in
// that root (see wrapperScript).
func StageFlatwrap(ctx context.Context, tree string, opts Options) error {
	if _, err := opts.check(); err != nil {
		return err
	}
	binds, err := opts.Wrap.HostBinds()
	if err != nil {
		return err
	}
	r, err := newRoot(opts.Rootfs, false)
	if err != nil {
		return err
	}
	rootDir := FlatwrapPrefix + "/" + opts.Name
	type wrap struct{ prog, dest string }
	var wraps []wrap
	dests := map[string]bool{}
	for _, p := range opts.Programs {
		rel := strings.TrimPrefix(p.Path, "/")
		real, err := r.resolveFile(rel)
		if err != nil {
			return fmt.Errorf("%s: not in %s: %w", p.Path, opts.Rootfs, notFound(err))
		}
		fi, err := os.Stat(r.abs(real))
		if err != nil {
			return err
		}
		if !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
			return fmt.Errorf("%s is not an executable file", p.Path)
		}
		dest, err := programDest(p, real, "its wrapper")
		if err != nil {
			return err
		}
		if strings.HasPrefix(dest+"/", FlatwrapPrefix+"/") {
			return fmt.Errorf("%s: the wrapper cannot go under %s", dest, FlatwrapPrefix)
		}
		if dests[dest] {
			return fmt.Errorf("%s: two programs would have their wrapper there", dest)
		}
		dests[dest] = true
		wraps = append(wraps, wrap{p.Path, dest})
	}
	dst := filepath.Join(tree, rootDir)
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	if err := copyTree(ctx, r.dir, dst); err != nil {
		return err
	}
	// Every mount point must exist in the copy: at run time it is part of
	// the read-only merged /usr, where nothing can be created.
	for _, d := range binds {
		if err := mountPoint(dst, d); err != nil {
			return err
		}
	}
	for _, w := range wraps {
		s := wrapperScript(opts.Name, rootDir, w.prog, binds, opts.Wrap.Env)
		p := filepath.Join(tree, w.dest)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		// The wrapper replaces whatever the copy has there (the chroot
		// lives elsewhere, so nothing is lost).
		if err := os.WriteFile(p, []byte(s), 0o755); err != nil {
			return err
		}
	}
	return nil
}

// mountPoint makes d (absolute, inside root) a real directory in the copy,
// replacing a symlink or file the image has there.
func mountPoint(root, d string) error {
	cur := root
	for _, c := range splitPath(d) {
		cur = filepath.Join(cur, c)
		fi, err := os.Lstat(cur)
		if err == nil && fi.IsDir() {
			continue
		}
		if err == nil {
			if err := os.Remove(cur); err != nil {
				return err
			}
		} else if !errors.Is(err, os.ErrNotExist) {
			return err
		}
		if err := os.Mkdir(cur, 0o755); err != nil {
			return err
		}
	}
	return nil
}

// copyTree makes dst a copy of src: hard links where possible (the
// builder reads the tree and never writes it), copies otherwise. The
// contents of /proc, /sys and /dev are left out (mount points only), and so
// are device nodes and sockets.
func copyTree(ctx context.Context, src, dst string) error {
	type pending struct {
		p    string
		mode fs.FileMode
	}
	var dirs []pending
	linkOK := true
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		target := filepath.Join(dst, rel)
		info, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case d.IsDir():
			if err := os.Mkdir(target, 0o700); err != nil && !(rel == "." && errors.Is(err, os.ErrExist)) {
				return err
			}
			chown(target, info)
			mode := info.Mode()
			if rel == "." {
				// The root of the copy is what every user enters, whatever
				// mode the rootfs directory (often a temp dir) has.
				mode = fs.ModeDir | 0o755
			}
			dirs = append(dirs, pending{target, mode})
			switch rel {
			case "proc", "sys", "dev":
				return filepath.SkipDir
			}
			return nil
		case d.Type()&fs.ModeSymlink != 0:
			l, err := os.Readlink(p)
			if err != nil {
				return err
			}
			if err := os.Symlink(l, target); err != nil {
				return err
			}
			chown(target, info)
			return nil
		case d.Type().IsRegular():
			if info.Mode()&(fs.ModeSetuid|fs.ModeSetgid) != 0 {
				// The image is built all-root: a set-user-ID program of
				// the rootfs would become set-user-ID root on the host. A
				// copy without those bits (a link would share the mode).
				if err := copyFile(p, target); err != nil {
					return err
				}
				chown(target, info)
				return os.Chmod(target, info.Mode().Perm())
			}
			if linkOK {
				err := os.Link(p, target)
				if err == nil {
					return nil
				}
				if !errors.Is(err, syscall.EXDEV) && !errors.Is(err, syscall.EPERM) && !errors.Is(err, syscall.EMLINK) {
					return err
				}
				linkOK = !errors.Is(err, syscall.EXDEV)
			}
			if err := copyFile(p, target); err != nil {
				return err
			}
			chown(target, info)
			return os.Chmod(target, info.Mode()&(fs.ModePerm|fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky))
		case d.Type()&fs.ModeNamedPipe != 0:
			return unix.Mkfifo(target, uint32(info.Mode().Perm()))
		}
		return nil // devices, sockets
	})
	if err != nil {
		return fmt.Errorf("copy %s: %w", src, err)
	}
	for i := len(dirs) - 1; i >= 0; i-- {
		m := dirs[i].mode
		if err := os.Chmod(dirs[i].p, m&(fs.ModePerm|fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky)); err != nil {
			return err
		}
	}
	return nil
}

func chown(p string, info fs.FileInfo) {
	if !isRoot {
		return
	}
	if st, ok := info.Sys().(*syscall.Stat_t); ok {
		_ = os.Lchown(p, int(st.Uid), int(st.Gid))
	}
}

var envName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// wrapperScript is the /bin/sh program installed at a wrapped program's
// /usr path. It runs prog inside root with the host directories binds
// mounted over it, by the first way that works: bwrap; unshare as root;
// unshare in an unprivileged user namespace. Arguments, stdio, the exit
// status and (when visible inside) the working directory pass through.
// SYSEXT_FLATWRAP_METHOD=bwrap|unshare|userns forces one way.
func wrapperScript(name, root, prog string, binds, env []string) string {
	q := shQuote
	var b strings.Builder
	fmt.Fprintf(&b, `#!/bin/sh
# Made by 'sysext flatwrap' for the extension %s: runs %s in its own root,
# %s, with these host directories: %s.
root=%s
prog=%s
name=%s
`, name, prog, root, strings.Join(binds, " "), q(root), q(prog), q(name))
	for _, e := range env {
		k, v, ok := strings.Cut(e, "=")
		if !ok || !envName.MatchString(k) || k == "PATH" || k == "HOME" {
			continue
		}
		fmt.Fprintf(&b, "[ -n \"${%s+set}\" ] || export %s=%s\n", k, k, q(v))
	}
	// The working directory passes through when the program can see it:
	// under a host directory, or present in the root; otherwise /.
	b.WriteString("wd=$(pwd 2>/dev/null) || wd=/\ncase \"$wd/\" in\n")
	for _, d := range binds {
		fmt.Fprintf(&b, "  %s/*) ;;\n", q(d))
	}
	b.WriteString("  *) [ -d \"$root$wd\" ] || wd=/ ;;\nesac\n")

	var bw, mounts strings.Builder
	for _, d := range binds {
		switch d {
		case "/dev":
			bw.WriteString(" --dev-bind /dev /dev")
		default:
			fmt.Fprintf(&bw, " --bind-try %s %s", q(d), q(d))
		}
		fmt.Fprintf(&mounts, "[ ! -e %s ] || mount --rbind %s \"$1%s\"\n", q(d), q(d), d)
	}
	inner := "set -e\n" + mounts.String() + "root=$1 wd=$2; shift 2\nexec unshare --root=\"$root\" --wd=\"$wd\" -- \"$@\"\n"
	fmt.Fprintf(&b, `inner=%s
method=${SYSEXT_FLATWRAP_METHOD:-}
if [ -z "$method" ]; then
  if command -v bwrap >/dev/null 2>&1 && bwrap --ro-bind / / true >/dev/null 2>&1; then
    method=bwrap
  elif [ "$(id -u)" = 0 ] && command -v unshare >/dev/null 2>&1; then
    method=unshare
  elif command -v unshare >/dev/null 2>&1 && unshare -U -r -m true >/dev/null 2>&1; then
    method=userns
  else
    echo "$name: cannot run $prog in its root $root: bwrap is not installed or does not work, this is not root, and unprivileged user namespaces are disabled; install bubblewrap or run as root" >&2
    exit 126
  fi
fi
case $method in
  bwrap) exec bwrap --bind "$root" /%s --chdir "$wd" "$prog" "$@" ;;
  unshare) exec unshare -m --propagation private -- /bin/sh -c "$inner" sh "$root" "$wd" "$prog" "$@" ;;
  userns) exec unshare -U -r -m --propagation private -- /bin/sh -c "$inner" sh "$root" "$wd" "$prog" "$@" ;;
  *) echo "$name: SYSEXT_FLATWRAP_METHOD=$method: use bwrap, unshare or userns" >&2; exit 126 ;;
esac
`, q(inner), bw.String())
	return b.String()
}

func shQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// Flatwrap stages opts (see StageFlatwrap) in a temp directory and builds
// the extension image with bo. Nothing is written on any error. When
// opts.Wrap.Env is nil, the image config kept next to the rootfs (by
// Rootfs) provides it.
func Flatwrap(ctx context.Context, opts Options, bo builder.Options) (*builder.Result, error) {
	if opts.Wrap.Env == nil {
		cfg, err := ReadConfig(opts.Rootfs)
		if err != nil {
			return nil, err
		}
		if cfg != nil {
			opts.Wrap.Env = cfg.Config.Env
		}
	}
	return buildStaged(ctx, opts, bo, StageFlatwrap)
}
