package flix

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"

	"github.com/sysext/sysext/internal/extract"
)

// isRoot says whether --run (a chroot in a private mount namespace) can
// work. A variable so tests can check the unprivileged behaviour.
var isRoot = os.Geteuid() == 0

// defaultPath is the PATH a command inside a rootfs gets when the image
// config has none.
const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// runScript mounts what a package manager needs and enters the root. It
// runs in a fresh private mount namespace, so every mount disappears with
// it. Positional parameters: root, command, mount, chroot, resolv flag.
const runScript = `set -e
R="$1"; CMD="$2"; MOUNT="$3"; CHROOT="$4"
"$MOUNT" -t proc proc "$R/proc"
"$MOUNT" --rbind /dev "$R/dev"
if [ "$5" = 1 ]; then "$MOUNT" --bind /etc/resolv.conf "$R/etc/resolv.conf"; fi
exec "$CHROOT" "$R" /bin/sh -c "$CMD"
`

// RunIn runs the shell command cmd inside the root filesystem dir: chroot
// in a private mount namespace with /proc, /dev and the host's resolv.conf,
// with env (the image's) as its environment. It needs root.
func RunIn(ctx context.Context, dir, cmd string, env []string, stdout, stderr io.Writer) error {
	if !isRoot {
		return errors.New("running a command in a rootfs needs root")
	}
	tools := map[string]string{}
	for _, t := range []string{"unshare", "mount", "chroot"} {
		p, err := exec.LookPath(t)
		if err != nil {
			return fmt.Errorf("running a command in a rootfs needs %s (util-linux, coreutils): %w", t, err)
		}
		tools[t] = p
	}
	r, err := extract.OpenRoot(dir, true)
	if err != nil {
		return err
	}
	defer r.Close()
	if _, err := r.ResolveFile("bin/sh"); err != nil {
		return fmt.Errorf("the image has no /bin/sh to run %q in: %w", cmd, err)
	}
	// Mount points must be real directories of the tree: a symlink there
	// would carry the mount somewhere else.
	for _, d := range []string{"proc", "dev"} {
		if err := realDir(r.Abs(d)); err != nil {
			return err
		}
	}
	resolv := "0"
	rc := r.Abs("etc/resolv.conf")
	fi, err := os.Lstat(rc)
	switch {
	case err == nil && fi.Mode().IsRegular():
		resolv = "1"
	case errors.Is(err, os.ErrNotExist):
		if realDir(r.Abs("etc")) == nil {
			if f, err := os.OpenFile(rc, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644); err == nil {
				f.Close()
				defer os.Remove(rc)
				resolv = "1"
			}
		}
	}
	if resolv == "0" && stderr != nil {
		fmt.Fprintf(stderr, "sysext: %s/etc/resolv.conf is not a regular file: running without the host's DNS settings\n", dir)
	}
	c := exec.CommandContext(ctx, tools["unshare"], "--mount", "--propagation", "private", "--fork", "--",
		"/bin/sh", "-c", runScript, "sh", r.Dir(), cmd, tools["mount"], tools["chroot"], resolv)
	c.Env = imageEnv(env)
	c.Stdin = nil
	c.Stdout, c.Stderr = stdout, stderr
	if err := c.Run(); err != nil {
		return fmt.Errorf("command %q in %s: %w", cmd, dir, err)
	}
	return nil
}

// realDir makes p a directory if it is missing and refuses anything else.
func realDir(p string) error {
	fi, err := os.Lstat(p)
	if errors.Is(err, os.ErrNotExist) {
		return os.Mkdir(p, 0o755)
	}
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s is not a directory (a symlink?): refused as a mount point", p)
	}
	return nil
}

// imageEnv is the image's environment with a PATH and HOME when it has
// none.
func imageEnv(env []string) []string {
	out := append([]string(nil), env...)
	has := func(k string) bool {
		for _, e := range env {
			if strings.HasPrefix(e, k+"=") {
				return true
			}
		}
		return false
	}
	if !has("PATH") {
		out = append(out, "PATH="+defaultPath)
	}
	if !has("HOME") {
		out = append(out, "HOME=/root")
	}
	return out
}
