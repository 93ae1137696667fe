package builder

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/sysext/sysext/internal/extract"
	"github.com/sysext/sysext/internal/tool"
)

// EROFS without staging: mkfs.erofs 1.5 reads one directory and cannot add
// files (nor replace one's attributes), so the tree plus our files must be
// one directory. Instead of hard-linking the whole tree (two journal updates of
// every input inode on ext4, about 6% of a fast lz4 build), the tool runs
// in a private mount namespace (a user namespace too when we are not root)
// on a read-only overlay: our files on top, the tree below. Nothing is
// mounted outside that namespace, and it ends with the tool. Where that
// cannot be set up (no unshare, user namespaces disabled, a path overlay
// cannot name) the build stages hard links as before.

// overlayView is the layer of our files and the mount point of the view.
type overlayView struct {
	tree, add, merged string
}

// newOverlayView writes our files under work/add, and copies of the files
// in drop without their privileges, their parent directories with the
// modes the tree's own have (an overlay takes a directory's attributes
// from the top layer), and makes the mount point. It refuses what
// squashfsAdditions refuses: a file where we need a directory, a directory
// where we write a file.
func newOverlayView(tree, work string, added []dropIn, drop []privileged) (*overlayView, error) {
	tree, err := filepath.Abs(tree)
	if err != nil {
		return nil, err
	}
	v := &overlayView{tree: tree, add: filepath.Join(work, "add"), merged: filepath.Join(work, "root")}
	for _, p := range []string{v.tree, v.add} {
		// lowerdir= separates layers with ':' and options with ','.
		if strings.ContainsAny(p, ":,\\\n") {
			return nil, errNoOverlay
		}
	}
	for _, d := range []string{v.add, v.merged} {
		if err := os.Mkdir(d, 0o755); err != nil {
			return nil, err
		}
	}
	// The view's root is the top layer's: 0755, as staging makes it.
	if err := os.Chmod(v.add, 0o755); err != nil {
		return nil, err
	}
	ours := map[string]bool{}
	dirFiles := append([]dropIn(nil), added...)
	for _, a := range added {
		ours[a.path] = true
	}
	for _, d := range drop {
		dirFiles = append(dirFiles, dropIn{path: d.rel})
	}
	for _, d := range addedDirs(dirFiles) {
		fi, err := treeDir(tree, d)
		if err != nil {
			return nil, err
		}
		mode := fs.FileMode(0o755)
		if fi != nil {
			mode = fi.Mode() & (fs.ModePerm | fs.ModeSetgid | fs.ModeSticky)
		}
		p := filepath.Join(v.add, filepath.FromSlash(d))
		if err := os.Mkdir(p, 0o755); err != nil {
			return nil, err
		}
		if err := os.Chmod(p, mode); err != nil {
			return nil, err
		}
	}
	for _, a := range added {
		if _, err := treeFile(tree, a.path); err != nil {
			return nil, err
		}
		if err := replaceFile(v.add, a.path, a.content); err != nil {
			return nil, fmt.Errorf("write %s: %w", a.path, err)
		}
	}
	for _, d := range drop {
		if ours[d.rel] {
			continue
		}
		src, dst := filepath.Join(tree, filepath.FromSlash(d.rel)), filepath.Join(v.add, filepath.FromSlash(d.rel))
		if err := extract.CopyFile(src, dst, true); err != nil {
			return nil, fmt.Errorf("copy %s without its privileges: %w", d.rel, err)
		}
	}
	return v, nil
}

// errNoOverlay says the overlay cannot be used for this build.
var errNoOverlay = errors.New("no overlay")

// overlayScript mounts the view and execs the tool; fd 3 hears "ready"
// only when the mount worked, which tells a failing setup from a failing
// tool.
const overlayScript = `mount -t overlay overlay -o "ro,lowerdir=$1:$2" "$3" || exit 125
shift 3
echo ready >&3
exec 3>&-
exec "$@"`

// command wraps the tool's command line (name, args) so that it runs on
// the view. ready is the read end of the marker pipe; the caller closes it.
func (v *overlayView) command(ctx context.Context, name string, args []string) (cmd *exec.Cmd, ready *os.File, err error) {
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		return nil, nil, errNoOverlay
	}
	toolPath, err := tool.Look(name)
	if err != nil {
		return nil, nil, err
	}
	ua := []string{"--mount"}
	if os.Geteuid() != 0 {
		ua = append(ua, "--user", "--map-root-user")
	}
	ua = append(ua, "--", "/bin/sh", "-c", overlayScript, "sh", v.add, v.tree, v.merged, toolPath)
	cmd, err = tool.Command(ctx, unshare, append(ua, args...)...)
	if err != nil {
		return nil, nil, err
	}
	r, w, err := os.Pipe()
	if err != nil {
		return nil, nil, err
	}
	cmd.ExtraFiles = []*os.File{w} // fd 3
	return cmd, r, nil
}

// runOverlay runs cmd and reports whether the view was set up (the marker
// arrived) besides the command's error.
func runOverlay(cmd *exec.Cmd, ready *os.File) (setUp bool, err error) {
	defer ready.Close()
	if err := cmd.Start(); err != nil {
		cmd.ExtraFiles[0].Close()
		return false, err
	}
	cmd.ExtraFiles[0].Close() // ours; the child has its copy
	marker := make(chan bool, 1)
	go func() {
		b, _ := io.ReadAll(io.LimitReader(ready, 16))
		marker <- strings.HasPrefix(string(b), "ready")
	}()
	err = cmd.Wait()
	return <-marker, err
}
