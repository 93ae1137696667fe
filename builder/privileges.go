package builder

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/sysext/sysext/internal/extract"
)

// Images are built all-root (the tools' --all-root) from content that
// someone else usually wrote: a container image, a rootfs, an upstream
// archive. A set-user-ID program owned by anyone becomes set-user-ID root
// on every host that merges the image, and a file capability
// (security.capability) is granted to any user who runs it. So every
// image drops set-user-ID/set-group-ID bits and file capabilities from
// every file but those the user named (Options.KeepPrivileges), and a
// device node is refused. The tree itself is never changed: squashfs gets
// pseudo definitions that modify or replace those files, EROFS gets copies
// without the privileges in the overlay's top layer (or in the staged
// tree).

// privileged is a file of the tree that loses its privileges in the image.
type privileged struct {
	rel  string      // slash path relative to the tree ("usr/bin/su")
	mode fs.FileMode // its mode in the tree
	caps bool        // it has file capabilities
	// shared: a name the user keeps is a hard link of this file, so
	// changing the inode in place would change the kept name too.
	shared bool
}

// imageMode is the mode the file gets in the image: its permissions and
// sticky bit, without set-user-ID or set-group-ID.
func (p privileged) imageMode() uint32 {
	m := uint32(p.mode.Perm())
	if p.mode&fs.ModeSticky != 0 {
		m |= 0o1000
	}
	return m
}

// keepSet checks the paths the user wants to keep their privileges:
// absolute, and each a regular file of the tree.
func keepSet(tree string, keep []string) (map[string]bool, error) {
	set := map[string]bool{}
	for _, k := range keep {
		c := path.Clean("/" + k)
		if !strings.HasPrefix(k, "/") || strings.Contains(k, "/../") || strings.HasSuffix(k, "/..") {
			return nil, fmt.Errorf("--keep-privileges %s: give the file's absolute path in the extension, as in /usr/bin/tool", k)
		}
		fi, err := os.Lstat(filepath.Join(tree, filepath.FromSlash(c)))
		if err != nil || !fi.Mode().IsRegular() {
			return nil, fmt.Errorf("--keep-privileges %s: not a regular file of the extension: name a file the tree has (no symlink)", k)
		}
		set[c] = true
	}
	return set, nil
}

// scanTree walks the tree once: it refuses device nodes and returns the
// files that lose their privileges. It reads each regular file's mode and
// asks for one extended attribute; the content is not read.
func scanTree(ctx context.Context, tree string, keep map[string]bool) ([]privileged, error) {
	var drop []privileged
	keptInodes := map[[2]uint64]bool{}
	for k := range keep {
		if fi, err := os.Lstat(filepath.Join(tree, filepath.FromSlash(k))); err == nil {
			if st, ok := fi.Sys().(*syscall.Stat_t); ok && st.Nlink > 1 {
				keptInodes[[2]uint64{uint64(st.Dev), st.Ino}] = true
			}
		}
	}
	err := filepath.WalkDir(tree, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		t := d.Type()
		if t&fs.ModeDevice == 0 && !t.IsRegular() {
			return nil
		}
		rel, err := filepath.Rel(tree, p)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		if t&fs.ModeDevice != 0 {
			kind := "block"
			if t&fs.ModeCharDevice != 0 {
				kind = "character"
			}
			return treeError("/%s is a %s device node (%s): an extension cannot carry device nodes, they would appear under the host's /usr; remove it", rel, kind, p)
		}
		if keep["/"+rel] {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		caps, err := extract.HasCapabilities(p)
		if err != nil {
			return err
		}
		if caps || extract.PrivilegedMode(info.Mode()) {
			shared := false
			if st, ok := info.Sys().(*syscall.Stat_t); ok && st.Nlink > 1 {
				shared = keptInodes[[2]uint64{uint64(st.Dev), st.Ino}]
			}
			drop = append(drop, privileged{rel: rel, mode: info.Mode(), caps: caps, shared: shared})
		}
		return nil
	})
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) || errors.Is(err, ErrBadTree) {
			return nil, err
		}
		return nil, fmt.Errorf("read %s: %w", tree, err)
	}
	return drop, nil
}

// droppedWarning is the build's warning about the files in drop.
func droppedWarning(drop []privileged) []string {
	if len(drop) == 0 {
		return nil
	}
	paths := make([]string, len(drop))
	for i, d := range drop {
		paths[i] = "/" + d.rel
	}
	return []string{extract.DroppedNote(paths)}
}

// pseudoName quotes a tree path for a mksquashfs pseudo definition:
// double quotes, with '"' and '\' escaped (squashfs-tools 4.5 reads them
// so, and a name may hold spaces).
func pseudoName(rel string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(rel) + `"`
}

// shellQuote quotes s for /bin/sh, which runs a pseudo file's command.
func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// squashfsDrops returns the pseudo definitions that take privileges away
// in a squashfs image and the tree paths to exclude: a set-ID file is
// modified in place ("m", mode without the bits); a file with capabilities
// is excluded and added again from its content ("f ... cat FILE"), since
// mksquashfs 4.5 cannot leave out one file's extended attributes, and so
// is a file that shares its inode with a name the user keeps.
// Definitions of names with a newline go on the command line (-p); the
// others in a pseudo file, whose lines cannot hold one.
func squashfsDrops(tree string, drop []privileged, skip map[string]bool) (lines, args, exclude []string) {
	for _, d := range drop {
		if skip[d.rel] {
			continue // replaced by a file of ours anyway
		}
		var def string
		if d.caps || d.shared {
			def = fmt.Sprintf("%s f %o 0 0 cat %s", pseudoName(d.rel), d.imageMode(), shellQuote(filepath.Join(tree, filepath.FromSlash(d.rel))))
			exclude = append(exclude, d.rel)
		} else {
			def = fmt.Sprintf("%s m %o 0 0", pseudoName(d.rel), d.imageMode())
		}
		if strings.Contains(def, "\n") {
			args = append(args, "-p", def)
		} else {
			lines = append(lines, def)
		}
	}
	return lines, args, exclude
}
