package fromimage

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/content"

	"github.com/sysext/sysext/atomicfile"
	"github.com/sysext/sysext/extension"
	"github.com/sysext/sysext/flix"
	"github.com/sysext/sysext/internal/extract"
	"github.com/sysext/sysext/internal/osrelease"
	"github.com/sysext/sysext/internal/smallfile"
)

// Source is one container image: where to fetch it and what to call it in
// messages.
type Source struct {
	Fetcher content.Fetcher
	Desc    ocispec.Descriptor // a manifest or an index
	Name    string             // the reference as the user gave it
}

// Options say what to take from an image.
type Options struct {
	Image Source
	// Base is the image Image was built FROM; a zero Base (nil Fetcher)
	// takes everything Image has under usr/ and opt/.
	Base Source
	Arch extension.Arch // "" = the host's
	// Keep lists paths (under /usr or /opt) kept although they would be
	// dropped (the package manager's database, caches).
	Keep []string
	// IgnoreDeletions builds even when the image deletes files of the base
	// under usr/ or opt/, which an extension cannot express.
	IgnoreDeletions bool
	// ConfextTree, when set, receives what the image adds under etc/ (an
	// empty directory; see WriteConfext), instead of dropping it.
	ConfextTree string
	// BaseOSRelease asks for the base's os-release (Result.OSRelease). In
	// layer mode that downloads the base's layers from the top down to the
	// one that holds it; otherwise base layers are never fetched.
	BaseOSRelease bool
	// MaxSize bounds the bytes of all the files extracted (both images'
	// when they are compared file by file; see extract.Budget); 0 derives
	// the bound from the free space where the tree is extracted.
	MaxSize int64
}

// Mode says how the added content was found.
type Mode string

const (
	// ByLayers: the image's first layers are the base's; only the layers
	// above them were downloaded and applied.
	ByLayers Mode = "layers"
	// ByFiles: the two filesystems were compared file by file.
	ByFiles Mode = "files"
	// Whole: no base; everything the image has.
	Whole Mode = "whole"
)

// Result says what Prepare put in the tree and what it left out.
type Result struct {
	Mode         Mode
	SharedLayers int                // layers the image shares with the base (ByLayers)
	AddedLayers  int                // layers applied (ByLayers)
	Kept         map[string]int     // files kept, per top-level directory (usr, opt)
	Dropped      map[string]int     // files left out, per top-level directory or dropped path
	Deletions    []string           // base paths the image deletes under usr/ or opt/ (and etc/ with a confext)
	OtherDeletes []string           // base paths it deletes elsewhere (dropped anyway)
	OSRelease    *extension.Release // the base's os-release, when asked for
}

// Summary is one line per dropped place, sorted, for people.
func (r *Result) Summary() string {
	if len(r.Dropped) == 0 {
		return "nothing dropped"
	}
	keys := make([]string, 0, len(r.Dropped))
	for k := range r.Dropped {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s (%d)", k, r.Dropped[k]))
	}
	return "dropped " + strings.Join(parts, ", ")
}

// dropInside are places under usr/ that a package manager writes while
// installing but that do not belong in an extension: its database.
var dropInside = []string{"usr/lib/sysimage/"}

// ErrDeletions is wrapped when the image deletes base files under usr/ or
// opt/ and IgnoreDeletions is not set.
var ErrDeletions = errors.New("the image deletes files of its base")

// ErrNothingAdded is wrapped when the image adds nothing under usr/ or
// opt/.
var ErrNothingAdded = errors.New("nothing added under usr/ or opt/")

// Plan is a from-image build with both images resolved (manifests and
// configs read, platforms checked) and nothing downloaded yet, so the
// caller can pick a place for the tree by the size of what will be
// downloaded.
type Plan struct {
	opts      Options
	keep      []string
	img, base *flix.Image
}

// NewPlan resolves opts' images for the platform and checks what needs no
// layer: the flags, the platforms.
func NewPlan(ctx context.Context, opts Options) (*Plan, error) {
	if opts.Arch == "" {
		opts.Arch = extension.HostArch()
	}
	keep, err := cleanKeep(opts.Keep)
	if err != nil {
		return nil, err
	}
	img, err := flix.ResolveImage(ctx, opts.Image.Fetcher, opts.Image.Desc, opts.Arch)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", opts.Image.Name, err)
	}
	var base *flix.Image
	if opts.Base.Fetcher != nil {
		base, err = flix.ResolveImage(ctx, opts.Base.Fetcher, opts.Base.Desc, opts.Arch)
		if err != nil {
			return nil, fmt.Errorf("base %s: %w", opts.Base.Name, err)
		}
		if p1, p2 := platform(img), platform(base); p1 != p2 {
			return nil, fmt.Errorf("%s is for %s but the base %s is for %s: give both for one platform", opts.Image.Name, p1, opts.Base.Name, p2)
		}
	}
	return &Plan{opts: opts, keep: keep, img: img, base: base}, nil
}

// DownloadSize is the compressed size of the layers Prepare extracts: the
// added layers when the image shares its first layers with the base,
// otherwise every layer of both images.
func (p *Plan) DownloadSize() int64 {
	from := 0
	var n int64
	switch {
	case p.base == nil:
	case sharesLayers(p.img, p.base):
		from = len(p.base.Manifest.Layers)
	default:
		for _, l := range p.base.Manifest.Layers {
			n += l.Size
		}
	}
	for _, l := range p.img.Manifest.Layers[from:] {
		n += l.Size
	}
	return n
}

// Prepare writes into tree (an empty directory) what Image adds to Base
// under usr/ and opt/: when Image's first layers are exactly Base's, the
// union of the layers above them (Base's layers are not downloaded);
// otherwise the files that differ between the two filesystems (content,
// mode, link target), provided both have the same os-release.
func Prepare(ctx context.Context, tree string, opts Options) (*Result, error) {
	p, err := NewPlan(ctx, opts)
	if err != nil {
		return nil, err
	}
	return p.Prepare(ctx, tree, opts.ConfextTree)
}

// Prepare is the package's Prepare for a resolved plan, with confextTree
// in place of Options.ConfextTree (the caller may choose where both go
// after seeing DownloadSize). Its scratch space is next to tree, on tree's
// filesystem, so the result moves into place; confextTree must be on the
// same filesystem.
func (p *Plan) Prepare(ctx context.Context, tree, confextTree string) (*Result, error) {
	opts, keep, img, base := p.opts, p.keep, p.img, p.base
	opts.ConfextTree = confextTree
	work, err := os.MkdirTemp(filepath.Dir(filepath.Clean(tree)), atomicfile.TempPrefix+"fromimage-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(work)
	budget, err := extract.NewBudget(opts.MaxSize, work)
	if err != nil {
		return nil, err
	}
	res := &Result{Kept: map[string]int{}, Dropped: map[string]int{}}
	added := filepath.Join(work, "added")
	if err := os.Mkdir(added, 0o755); err != nil {
		return nil, err
	}
	switch {
	case base == nil:
		res.Mode = Whole
		if err := extractAll(ctx, opts.Image.Fetcher, img, added, budget); err != nil {
			return nil, fmt.Errorf("%s: %w", opts.Image.Name, err)
		}
	case sharesLayers(img, base):
		res.Mode = ByLayers
		n := len(base.Manifest.Layers)
		res.SharedLayers, res.AddedLayers = n, len(img.Manifest.Layers)-n
		var deleted []string
		a, err := extract.NewApplier(added, extract.Options{Budget: budget, OnWhiteout: func(p string, opaque, existed bool) error {
			// A whiteout of something an added layer made is internal
			// to the build; anything else removes a base file.
			if opaque {
				deleted = append(deleted, p+"/ (opaque directory: hides the base's content)")
			} else if !existed {
				deleted = append(deleted, p)
			}
			return nil
		}})
		if err != nil {
			return nil, err
		}
		defer a.Close()
		if err := applyAll(ctx, opts.Image.Fetcher, img, n, a); err != nil {
			return nil, fmt.Errorf("%s: %w", opts.Image.Name, err)
		}
		res.addDeletions(deleted, opts.ConfextTree != "")
		if opts.BaseOSRelease {
			res.OSRelease, err = layerOSRelease(ctx, opts.Base.Fetcher, base)
			if err != nil {
				return nil, fmt.Errorf("base %s: %w", opts.Base.Name, err)
			}
		}
	default:
		res.Mode = ByFiles
		baseDir := filepath.Join(work, "base")
		imgDir := filepath.Join(work, "image")
		for _, d := range []string{baseDir, imgDir} {
			if err := os.Mkdir(d, 0o755); err != nil {
				return nil, err
			}
		}
		if err := extractAll(ctx, opts.Base.Fetcher, base, baseDir, budget); err != nil {
			return nil, fmt.Errorf("base %s: %w", opts.Base.Name, err)
		}
		if err := extractAll(ctx, opts.Image.Fetcher, img, imgDir, budget); err != nil {
			return nil, fmt.Errorf("%s: %w", opts.Image.Name, err)
		}
		bo, err := treeOSRelease(baseDir)
		if err != nil {
			return nil, fmt.Errorf("base %s: %w", opts.Base.Name, err)
		}
		ir, err := treeOSRelease(imgDir)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", opts.Image.Name, err)
		}
		id, vid := extension.FieldID, extension.FieldVersionID
		if bo.Get(id) == "" || bo.Get(id) != ir.Get(id) || bo.Get(vid) != ir.Get(vid) {
			return nil, fmt.Errorf("%s is not based on %s: they share no layers and their os-release differs (%s %s, base %s %s): name the image it was built FROM with --base",
				opts.Image.Name, opts.Base.Name, ir.Get(id), ir.Get(vid), bo.Get(id), bo.Get(vid))
		}
		res.OSRelease = bo
		deleted, err := diffTrees(ctx, baseDir, imgDir, added)
		if err != nil {
			return nil, err
		}
		res.addDeletions(deleted, opts.ConfextTree != "")
	}
	if len(res.Deletions) > 0 && !opts.IgnoreDeletions {
		return res, fmt.Errorf("%w, which an extension cannot express: %s: remove them from the Containerfile, or build anyway with --ignore-deletions", ErrDeletions, strings.Join(res.Deletions, ", "))
	}
	if err := res.sort(added, tree, opts.ConfextTree, keep); err != nil {
		return res, err
	}
	return res, nil
}

func platform(i *flix.Image) string {
	p := i.Config.OS + "/" + i.Config.Architecture
	if i.Config.Variant != "" {
		p += "/" + i.Config.Variant
	}
	return p
}

func sharesLayers(img, base *flix.Image) bool {
	bl, il := base.Manifest.Layers, img.Manifest.Layers
	if len(bl) == 0 || len(bl) > len(il) {
		return false
	}
	for i := range bl {
		if bl[i].Digest != il[i].Digest {
			return false
		}
	}
	return true
}

func (r *Result) addDeletions(paths []string, etc bool) {
	for _, p := range paths {
		if under(p, "usr") || under(p, "opt") || etc && under(p, "etc") {
			r.Deletions = append(r.Deletions, "/"+p)
		} else {
			r.OtherDeletes = append(r.OtherDeletes, "/"+p)
		}
	}
	sort.Strings(r.Deletions)
	sort.Strings(r.OtherDeletes)
}

func under(p, top string) bool { return p == top || strings.HasPrefix(p, top+"/") }

func cleanKeep(keep []string) ([]string, error) {
	var out []string
	for _, k := range keep {
		c := strings.TrimPrefix(path.Clean("/"+k), "/")
		if strings.Contains(k, "..") || !(under(c, "usr") || under(c, "opt")) {
			return nil, fmt.Errorf("--keep %s: only paths under /usr or /opt can be in a system extension", k)
		}
		out = append(out, c)
	}
	return out, nil
}

// extractAll applies every layer of img into dir.
func extractAll(ctx context.Context, f content.Fetcher, img *flix.Image, dir string, budget *extract.Budget) error {
	a, err := extract.NewApplier(dir, extract.Options{Budget: budget})
	if err != nil {
		return err
	}
	defer a.Close()
	return applyAll(ctx, f, img, 0, a)
}

func applyAll(ctx context.Context, f content.Fetcher, img *flix.Image, from int, a *extract.Applier) error {
	var diffIDs = img.Config.RootFS.DiffIDs
	if len(diffIDs) == len(img.Manifest.Layers) {
		diffIDs = diffIDs[from:]
	} else {
		diffIDs = nil
	}
	if err := flix.ApplyLayers(ctx, f, img.Manifest.Layers[from:], diffIDs, a); err != nil {
		return err
	}
	return a.Finish()
}

// sort moves usr/ and opt/ from added into tree, leaving out dropInside
// (unless kept), etc/ into confext when set, and counts what is kept and
// dropped.
func (r *Result) sort(added, tree, confext string, keep []string) error {
	ents, err := os.ReadDir(added)
	if err != nil {
		return err
	}
	for _, e := range ents {
		name := e.Name()
		src := filepath.Join(added, name)
		if (name == "usr" || name == "opt") && e.IsDir() {
			for _, d := range dropInside {
				d = strings.TrimSuffix(d, "/")
				if kept(d, keep) {
					continue
				}
				p := filepath.Join(added, d)
				if _, err := os.Lstat(p); err == nil {
					n := countFiles(p)
					if n > 0 {
						r.Dropped[d+"/"] += n
					}
					// Keep whatever --keep names below it.
					if err := removeExcept(p, d, keep); err != nil {
						return err
					}
				}
			}
			n := countFiles(src)
			if n == 0 {
				continue
			}
			r.Kept[name] = n
			if err := os.Rename(src, filepath.Join(tree, name)); err != nil {
				return err
			}
			continue
		}
		if name == "etc" && e.IsDir() && confext != "" {
			if n := countFiles(src); n > 0 {
				r.Kept["etc"] = n
				if err := os.Rename(src, filepath.Join(confext, "etc")); err != nil {
					return err
				}
			}
			continue
		}
		if n := countFiles(src); n > 0 {
			r.Dropped[name+"/"] += n
		}
	}
	if r.Kept["usr"]+r.Kept["opt"] == 0 {
		what := "nothing at all"
		if len(r.Dropped) > 0 {
			what = strings.TrimPrefix(r.Summary(), "dropped ")
		}
		return fmt.Errorf("%w: the build changed only %s; install into /usr or /opt, or keep a path with --keep", ErrNothingAdded, what)
	}
	if _, err := os.Stat(filepath.Join(tree, "usr")); errors.Is(err, os.ErrNotExist) {
		// An extension must have usr/, even one that ships only opt/.
		return os.Mkdir(filepath.Join(tree, "usr"), 0o755)
	}
	return nil
}

func kept(p string, keep []string) bool {
	for _, k := range keep {
		if under(p, k) {
			return true
		}
	}
	return false
}

// removeExcept removes the tree at p (rel is its path in the image) but
// the paths keep names below it.
func removeExcept(p, rel string, keep []string) error {
	inside := false
	for _, k := range keep {
		if under(k, rel) {
			inside = true
		}
	}
	if !inside {
		return os.RemoveAll(p)
	}
	ents, err := os.ReadDir(p)
	if err != nil {
		return err
	}
	for _, e := range ents {
		cr := rel + "/" + e.Name()
		if kept(cr, keep) {
			continue
		}
		if err := removeExcept(filepath.Join(p, e.Name()), cr, keep); err != nil {
			return err
		}
	}
	return nil
}

// countFiles counts the non-directories under p.
func countFiles(p string) int {
	n := 0
	filepath.WalkDir(p, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			n++
		}
		return nil
	})
	return n
}

// diffTrees copies into out what img has that base has not, or has
// otherwise (type, mode, owner, content, link target), and returns the
// paths of base that img lacks (deletions), as paths relative to the root.
func diffTrees(ctx context.Context, base, img, out string) ([]string, error) {
	err := filepath.WalkDir(img, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		rel, _ := filepath.Rel(img, p)
		if rel == "." {
			return nil
		}
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		bfi, berr := os.Lstat(filepath.Join(base, rel))
		same := berr == nil && sameEntry(p, filepath.Join(base, rel), fi, bfi)
		if fi.IsDir() {
			if !same {
				// A new or changed directory: make it (children follow).
				return mkdirLike(filepath.Join(out, rel), fi)
			}
			return nil
		}
		if same {
			return nil
		}
		if err := os.MkdirAll(filepath.Dir(filepath.Join(out, rel)), 0o755); err != nil {
			return err
		}
		return os.Link(p, filepath.Join(out, rel))
	})
	if err != nil {
		return nil, err
	}
	var deleted []string
	err = filepath.WalkDir(base, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(base, p)
		if rel == "." {
			return nil
		}
		if _, err := os.Lstat(filepath.Join(img, rel)); errors.Is(err, os.ErrNotExist) {
			deleted = append(deleted, filepath.ToSlash(rel))
			if d.IsDir() {
				return filepath.SkipDir
			}
		}
		return nil
	})
	return deleted, err
}

func mkdirLike(p string, fi fs.FileInfo) error {
	if err := os.MkdirAll(p, 0o755); err != nil {
		return err
	}
	return os.Chmod(p, fi.Mode().Perm())
}

// sameEntry compares two entries by type, mode, link target and content.
func sameEntry(a, b string, fa, fb fs.FileInfo) bool {
	if fa.Mode() != fb.Mode() {
		return false
	}
	switch {
	case fa.IsDir():
		return true
	case fa.Mode()&fs.ModeSymlink != 0:
		la, _ := os.Readlink(a)
		lb, _ := os.Readlink(b)
		return la == lb
	case fa.Mode().IsRegular():
		if fa.Size() != fb.Size() {
			return false
		}
		ha, err1 := fileHash(a)
		hb, err2 := fileHash(b)
		return err1 == nil && err2 == nil && bytes.Equal(ha, hb)
	}
	return true
}

func fileHash(p string) ([]byte, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return nil, err
	}
	return h.Sum(nil), nil
}

// treeOSRelease reads the os-release of an extracted tree (symlinks
// resolved inside it); nil when it has none. An error names the file as the
// image has it (etc/os-release), not where it was extracted.
func treeOSRelease(dir string) (*extension.Release, error) {
	rel, _, err := osrelease.Read(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	inTree := func(p *string) { *p = strings.TrimPrefix(*p, filepath.Clean(dir)+"/") }
	var pe *osrelease.ParseError
	var tl *smallfile.TooLargeError
	var fe *fs.PathError
	switch {
	case errors.As(err, &pe):
		inTree(&pe.Path)
	case errors.As(err, &tl):
		inTree(&tl.Path)
	case errors.As(err, &fe):
		inTree(&fe.Path)
	}
	return rel, err
}

// layerOSRelease finds the base's os-release by reading its layers from
// the top down, stopping at the first that has one (each layer read is
// read whole, so its digest is checked).
func layerOSRelease(ctx context.Context, f content.Fetcher, base *flix.Image) (*extension.Release, error) {
	for i := len(base.Manifest.Layers) - 1; i >= 0; i-- {
		dir, err := os.MkdirTemp("", "sysext-osrelease-")
		if err != nil {
			return nil, err
		}
		found, err := osReleaseInLayer(ctx, f, base, i, dir)
		os.RemoveAll(dir)
		if err != nil {
			return nil, err
		}
		if found != nil {
			return found, nil
		}
	}
	return nil, errors.New("no os-release in any layer: give --os and --version-id (or --os _any)")
}

// osReleaseInLayer applies only the os-release files of layer i (through
// a filter on the tar stream) into dir and reads them.
func osReleaseInLayer(ctx context.Context, f content.Fetcher, base *flix.Image, i int, dir string) (*extension.Release, error) {
	var diffIDs []digest.Digest
	if len(base.Config.RootFS.DiffIDs) == len(base.Manifest.Layers) {
		diffIDs = base.Config.RootFS.DiffIDs[i : i+1]
	}
	a, err := extract.NewApplier(dir, extract.Options{Filter: func(h *tar.Header) bool {
		n := strings.TrimPrefix(path.Clean("/"+h.Name), "/")
		return n == "etc" || n == "usr" || n == "usr/lib" || slices.Contains(osrelease.Paths, n)
	}})
	if err != nil {
		return nil, err
	}
	defer a.Close()
	if err := flix.ApplyLayers(ctx, f, base.Manifest.Layers[i:i+1], diffIDs, a); err != nil {
		return nil, err
	}
	rel, err := treeOSRelease(dir)
	if err != nil {
		return nil, fmt.Errorf("layer %d: %w", i+1, err)
	}
	return rel, nil
}
