package builder

import (
	"context"

	"errors"
	"fmt"
	"github.com/sysext/sysext/atomicfile"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
)

// prepareSource makes what the tool reads: the tree plus the files we add
// (extension-release, drop-ins), without changing the tree.
//
// squashfs: mksquashfs reads the tree itself and adds our files as pseudo
// files given on its command line (-p), excluding the tree's own copies
// (-e), and takes privileges away with more pseudo definitions (see
// squashfsDrops); nothing is staged. EROFS: mkfs.erofs 1.5 cannot add
// files, so the tree is staged as hard links under work (see stage), the
// files that lose their privileges are copies, and our files replace
// their links there.
//
// It returns the directory to give the tool, extra tool arguments (to go
// last: -e takes the rest of the command line), the staged tree to remove
// after the tool ("" for squashfs), and how many files had to be copied
// instead of linked.
func (p *buildPlan) prepareSource(ctx context.Context, work string, added []dropIn) (src string, extra []string, staged string, copied int, err error) {
	if p.format == Squashfs {
		args, err := squashfsAdditions(p.tree, work, added, p.drop)
		return p.tree, args, "", 0, err
	}
	staged = filepath.Join(work, "stage")
	if p.stageDir != "" {
		if staged, err = os.MkdirTemp(p.stageDir, atomicfile.TempPrefix+filepath.Base(p.target)+".stage-"); err != nil {
			return "", nil, "", 0, fmt.Errorf("create a staging directory in %s: %w", p.stageDir, err)
		}
	} else if err := os.Mkdir(staged, 0o700); err != nil {
		return "", nil, "", 0, err
	}
	root := filepath.Join(staged, "root")
	if err := os.Mkdir(root, 0o755); err != nil {
		return "", nil, staged, 0, err
	}
	copied, err = stage(ctx, p.tree, root, p.keep)
	if err != nil {
		return "", nil, staged, copied, err
	}
	for _, a := range added {
		if err := replaceFile(root, a.path, a.content); err != nil {
			return "", nil, staged, copied, fmt.Errorf("stage %s: %w", a.path, err)
		}
	}
	return root, nil, staged, copied, nil
}

// maxPseudoArg keeps each -p argument under the kernel's limit for one
// argument (MAX_ARG_STRLEN, 128 KiB).
const maxPseudoArg = 120 << 10

// squashfsAdditions returns the mksquashfs arguments that add our files to
// the image: a pseudo definition (-p) per file and per missing parent
// directory, the file's content written by printf, and an exclude list (-e,
// last) for the tree's own files at those paths; and those that take the
// privileges of the files in drop away (a pseudo file, -pf, in work).
func squashfsAdditions(tree, work string, added []dropIn, drop []privileged) ([]string, error) {
	var args, exclude []string
	ours := map[string]bool{}
	for _, a := range added {
		ours[a.path] = true
	}
	lines, dargs, dexclude := squashfsDrops(tree, drop, ours)
	if len(lines) > 0 {
		pf := filepath.Join(work, "privileges.pseudo")
		if err := os.WriteFile(pf, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
			return nil, err
		}
		args = append(args, "-pf", pf)
	}
	args = append(args, dargs...)
	exclude = append(exclude, dexclude...)
	for _, d := range addedDirs(added) {
		fi, err := treeDir(tree, d)
		if err != nil {
			return nil, err
		}
		if fi == nil {
			args = append(args, "-p", d+" d 755 0 0")
		}
	}
	for _, a := range added {
		exists, err := treeFile(tree, a.path)
		if err != nil {
			return nil, err
		}
		if exists {
			exclude = append(exclude, a.path)
		}
		// Paths are checked names without whitespace; mksquashfs runs the
		// rest of the definition with /bin/sh -c.
		def := a.path + " f 644 0 0 printf " + printfFormat(a.content)
		if len(def) > maxPseudoArg {
			return nil, treeError("%s would be %d bytes: sysext adds files of at most about 100 KiB", a.path, len(a.content))
		}
		args = append(args, "-p", def)
	}
	if len(exclude) > 0 {
		// Plain -e excludes by inode, so every hard link of an excluded
		// file would go too; with -wildcards it excludes names, each
		// escaped to match only itself.
		args = append(args, "-wildcards", "-e")
		for _, e := range exclude {
			args = append(args, wildcardQuote(e))
		}
	}
	return args, nil
}

// wildcardQuote escapes every byte of a tree path but letters, digits and
// "/._-" with a backslash, so that mksquashfs's -wildcards (fnmatch with
// extended patterns) matches exactly that path.
func wildcardQuote(p string) string {
	var b strings.Builder
	for i := 0; i < len(p); i++ {
		c := p[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("/._-", c) >= 0) {
			b.WriteByte('\\')
		}
		b.WriteByte(c)
	}
	return b.String()
}

// printfFormat quotes content as a single-quoted printf format that prints
// it byte for byte: printable ASCII stays, % and \ are doubled, and every
// other byte (newline, quote, anything else) is an octal escape, so the
// definition stays on one line.
func printfFormat(content []byte) string {
	var b strings.Builder
	b.Grow(len(content) + 16)
	b.WriteByte('\'')
	for _, c := range content {
		switch {
		case c == '%':
			b.WriteString("%%")
		case c == '\\':
			b.WriteString(`\\`)
		case c == '\'' || c < 0x20 || c > 0x7e:
			fmt.Fprintf(&b, "\\%03o", c)
		default:
			b.WriteByte(c)
		}
	}
	b.WriteByte('\'')
	return b.String()
}

// addedDirs returns the parent directories of the files we add, parents
// before children.
func addedDirs(added []dropIn) []string {
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
	sort.Strings(sorted)
	return sorted
}

// treeDir returns the tree's entry at d, a directory our files go in: nil
// when the tree has none, an error when it has something else there.
func treeDir(tree, d string) (fs.FileInfo, error) {
	fi, err := os.Lstat(filepath.Join(tree, filepath.FromSlash(d)))
	switch {
	case err == nil && !fi.IsDir():
		return nil, treeError("%s is in the way of the directory sysext adds there: it must be a directory", filepath.Join(tree, d))
	case err == nil:
		return fi, nil
	case errors.Is(err, fs.ErrNotExist):
		return nil, nil
	default:
		return nil, err
	}
}

// treeFile reports whether the tree has its own file at p, where we write
// ours; a directory there is an error.
func treeFile(tree, p string) (bool, error) {
	fi, err := os.Lstat(filepath.Join(tree, filepath.FromSlash(p)))
	switch {
	case err == nil && fi.IsDir():
		return false, treeError("%s is a directory where sysext writes a file", filepath.Join(tree, p))
	case err == nil:
		return true, nil
	case errors.Is(err, fs.ErrNotExist):
		return false, nil
	default:
		return false, err
	}
}
