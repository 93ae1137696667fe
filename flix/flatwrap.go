package flix

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"

	"github.com/sysext/sysext/builder"
	"github.com/sysext/sysext/internal/extract"
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
//
// The copy keeps hard links, modes and extended attributes, but files lose
// set-user-ID/set-group-ID bits and file capabilities unless named in
// opts.KeepPrivileges.
func StageFlatwrap(ctx context.Context, tree string, opts Options) error {
	_, err := stageFlatwrap(ctx, tree, opts)
	return err
}

// stageFlatwrap is StageFlatwrap; it returns the image paths of the files
// that keep their privileges.
func stageFlatwrap(ctx context.Context, tree string, opts Options) ([]string, error) {
	if _, err := opts.check(); err != nil {
		return nil, err
	}
	binds, err := opts.Wrap.HostBinds()
	if err != nil {
		return nil, err
	}
	r, keep, err := openRootfs(opts)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	rootDir := FlatwrapPrefix + "/" + opts.Name
	type wrap struct{ prog, dest string }
	var wraps []wrap
	dests := map[string]bool{}
	for _, p := range opts.Programs {
		rel := strings.TrimPrefix(p.Path, "/")
		real, err := r.ResolveFile(rel)
		if err != nil {
			return nil, fmt.Errorf("%s: not in %s: %w", p.Path, opts.Rootfs, notFound(err))
		}
		fi, err := os.Stat(r.Abs(real))
		if err != nil {
			return nil, err
		}
		if !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
			return nil, fmt.Errorf("%s is not an executable file", p.Path)
		}
		dest, err := programDest(p, real, "its wrapper")
		if err != nil {
			return nil, err
		}
		if strings.HasPrefix(dest+"/", FlatwrapPrefix+"/") {
			return nil, fmt.Errorf("%s: the wrapper cannot go under %s", dest, FlatwrapPrefix)
		}
		if dests[dest] {
			return nil, fmt.Errorf("%s: two programs would have their wrapper there", dest)
		}
		dests[dest] = true
		wraps = append(wraps, wrap{p.Path, dest})
	}
	dst := filepath.Join(tree, rootDir)
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return nil, err
	}
	// Hard links where possible: the builder reads the copy and never
	// writes it. A program that could gain privileges (set-user-ID,
	// set-group-ID, file capabilities) is copied without them unless the
	// user named it: the image is built all-root, so it would gain them
	// as root on every host.
	res, err := extract.CopyTree(ctx, r.Dir(), dst, extract.CopyOptions{
		Link:        true,
		Privileges:  extract.DropUnless(keep),
		SkipSpecial: true,
		Prune:       func(rel string) bool { return rel == "/proc" || rel == "/sys" || rel == "/dev" },
	})
	if err != nil {
		return nil, err
	}
	if len(res.Dropped) > 0 {
		fmt.Fprintf(opts.Stderr, "sysext: warning: %s\n", extract.DroppedNote(res.Dropped))
	}
	// Every mount point must exist in the copy: at run time it is part of
	// the read-only merged /usr, where nothing can be created.
	for _, d := range binds {
		if err := mountPoint(dst, d); err != nil {
			return nil, err
		}
	}
	for _, w := range wraps {
		s := wrapperScript(opts.Name, rootDir, w.prog, binds, opts.Wrap.Env)
		p := filepath.Join(tree, w.dest)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return nil, err
		}
		// The wrapper replaces whatever the copy has there (the chroot
		// lives elsewhere, so nothing is lost).
		if err := os.WriteFile(p, []byte(s), 0o755); err != nil {
			return nil, err
		}
	}
	var kept []string
	for _, k := range keep {
		kept = append(kept, rootDir+k)
	}
	return kept, nil
}

// mountPoint makes d (absolute, inside root) a real directory in the copy,
// replacing a symlink or file the image has there.
func mountPoint(root, d string) error {
	cur := root
	for _, c := range strings.Split(strings.Trim(d, "/"), "/") {
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

var envName = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`) })

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
		if !ok || !envName().MatchString(k) || k == "PATH" || k == "HOME" {
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
	return buildStaged(ctx, opts, bo, stageFlatwrap)
}
