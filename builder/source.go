package builder

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// prepareSource makes what the tool reads: the tree plus the files we add
// (extension-release, drop-ins), without changing the tree.
//
// squashfs: mksquashfs reads the tree itself and adds our files as pseudo
// files (-pf), excluding the tree's own copies (-ef); nothing is staged.
// EROFS: mkfs.erofs 1.5 can neither add nor exclude files, so the tree is
// staged as hard links under work (see stage) and our files replace their
// links there.
//
// It returns the directory to give the tool, extra tool arguments, and
// how many files had to be copied instead of linked.
func (p *buildPlan) prepareSource(ctx context.Context, work string, added []dropIn) (string, []string, int, error) {
	if p.format == Squashfs {
		args, err := squashfsAdditions(p.tree, work, added)
		return p.tree, args, 0, err
	}
	root := filepath.Join(work, "root")
	if err := os.Mkdir(root, 0o755); err != nil {
		return "", nil, 0, err
	}
	copied, err := stage(ctx, p.tree, root)
	if err != nil {
		return "", nil, copied, err
	}
	for _, a := range added {
		if err := replaceFile(root, a.path, a.content); err != nil {
			return "", nil, copied, fmt.Errorf("stage %s: %w", a.path, err)
		}
	}
	return root, nil, copied, nil
}

// squashfsAdditions writes our files under work and returns the
// mksquashfs arguments that add them to the image: a pseudo file
// definition per file (and per missing parent directory), and an exclude
// list for the tree's own files at those paths.
func squashfsAdditions(tree, work string, added []dropIn) ([]string, error) {
	dirs := map[string]bool{}
	for _, a := range added {
		for d := path.Dir(a.path); d != "." && d != "/"; d = path.Dir(d) {
			dirs[d] = true
		}
	}
	sorted := make([]string, 0, len(dirs))
	for d := range dirs {
		sorted = append(sorted, d)
	}
	sort.Strings(sorted) // parents before children
	var pseudo, exclude strings.Builder
	for _, d := range sorted {
		fi, err := os.Lstat(filepath.Join(tree, filepath.FromSlash(d)))
		switch {
		case err == nil && !fi.IsDir():
			return nil, treeError("%s is in the way of the directory sysext adds there: it must be a directory", filepath.Join(tree, d))
		case err == nil:
		case errors.Is(err, fs.ErrNotExist):
			fmt.Fprintf(&pseudo, "%s d 755 0 0\n", d)
		default:
			return nil, err
		}
	}
	files := filepath.Join(work, "files")
	if err := os.Mkdir(files, 0o755); err != nil {
		return nil, err
	}
	for i, a := range added {
		content := filepath.Join(files, strconv.Itoa(i))
		if err := os.WriteFile(content, a.content, 0o644); err != nil {
			return nil, err
		}
		fi, err := os.Lstat(filepath.Join(tree, filepath.FromSlash(a.path)))
		switch {
		case err == nil && fi.IsDir():
			return nil, treeError("%s is a directory where sysext writes a file", filepath.Join(tree, a.path))
		case err == nil:
			exclude.WriteString(a.path + "\n")
		case !errors.Is(err, fs.ErrNotExist):
			return nil, err
		}
		// Paths are checked names without whitespace; the command runs
		// in a shell, so the content's path is quoted.
		fmt.Fprintf(&pseudo, "%s f 644 0 0 cat %s\n", a.path, shellQuote(content))
	}
	pf := filepath.Join(work, "pseudo")
	if err := os.WriteFile(pf, []byte(pseudo.String()), 0o644); err != nil {
		return nil, err
	}
	args := []string{"-pf", pf}
	if exclude.Len() > 0 {
		ef := filepath.Join(work, "exclude")
		if err := os.WriteFile(ef, []byte(exclude.String()), 0o644); err != nil {
			return nil, err
		}
		args = append(args, "-ef", ef)
	}
	return args, nil
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }
