package recipe

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path"
	"path/filepath"

	"github.com/sysext/sysext/atomicfile"
	"github.com/sysext/sysext/builder"
	"github.com/sysext/sysext/extension"
)

// BakeOptions say what to bake and where.
type BakeOptions struct {
	Recipe  *Recipe
	Resolve ResolveOptions // version, arch, options, sha256 pins

	// The extension-release identity; ID "" = _any.
	ID, SysextLevel, VersionID string

	Format          builder.ImageFormat // "" = squashfs
	Compression     string
	Output          string // file or directory; "" = current directory
	Force           bool
	Digest          bool // also hash the image into Image.Digest
	SourceDateEpoch int64

	// MaxSize bounds the bytes each downloaded archive may unpack to
	// (holes included); 0 derives the bound from the free space of the
	// cache's filesystem (see extract.Budget).
	MaxSize int64

	CacheDir string       // required: where verified downloads are kept
	Mirror   string       // see Fetcher.Mirror
	Client   *http.Client // nil = see Fetcher.Client
	Progress io.Writer    // progress bars and tool output; nil = quiet
}

// BakeResult is a baked image and the plan it came from.
type BakeResult struct {
	Plan  *Plan
	Image *builder.Result
}

// DefaultCacheDir is $XDG_CACHE_HOME/sysext/downloads (or ~/.cache/...).
func DefaultCacheDir() (string, error) {
	dir, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("no cache directory: set $XDG_CACHE_HOME or use --cache: %w", err)
	}
	return filepath.Join(dir, "sysext", "downloads"), nil
}

// Bake resolves the recipe, fetches and verifies its downloads, lays out a
// tree and builds the image with builder.Build. On any error no image is
// written and the staged tree is removed; the cache keeps only verified
// downloads.
func Bake(ctx context.Context, o BakeOptions) (*BakeResult, error) {
	if o.Recipe == nil {
		return nil, errors.New("bake: no recipe")
	}
	plan, err := o.Recipe.Resolve(o.Resolve)
	if err != nil {
		return nil, err
	}
	if o.CacheDir == "" {
		if o.CacheDir, err = DefaultCacheDir(); err != nil {
			return nil, err
		}
	}
	id := o.ID
	if id == "" {
		id = extension.AnyID
	}
	meta := extension.Metadata{
		Name:        o.Recipe.Name,
		Version:     plan.Version,
		Arch:        plan.Arch,
		ID:          id,
		SysextLevel: o.SysextLevel,
		VersionID:   o.VersionID,
	}
	// Refuse a bad option (compression, level without --os, ...) before
	// downloading anything.
	if err := builder.CheckOptions(builder.Options{Meta: meta, Format: o.Format, Compression: o.Compression, SourceDateEpoch: o.SourceDateEpoch}); err != nil {
		return nil, fmt.Errorf("recipe %s: %w", o.Recipe.Name, err)
	}

	// Refuse a bad output before downloading anything.
	target, err := builder.OutputPath(o.Output, extension.FileName(meta.Name, meta.Version, meta.Arch))
	if err != nil {
		return nil, err
	}
	if _, err := os.Lstat(target); err == nil && !o.Force {
		return nil, fmt.Errorf("%s already exists: use --force to replace it", target)
	}

	f := &Fetcher{CacheDir: o.CacheDir, Mirror: o.Mirror, Client: o.Client, Progress: o.Progress, MaxSize: o.MaxSize}
	files := map[string]string{}
	for _, d := range plan.Downloads {
		p, err := f.Fetch(ctx, d)
		if err != nil {
			return nil, fmt.Errorf("recipe %s %s %s: %w", o.Recipe.Name, plan.Version, plan.Arch, err)
		}
		files[d.ID] = p
		if d.Format != "file" {
			// Unpack once into the cache, by the rules of container
			// layers (nothing resolves outside the tree); later bakes
			// link from there. An archive those rules refuse is refused.
			dir, err := f.Unpacked(ctx, p, filepath.Base(p), d.Format)
			if err != nil {
				return nil, fmt.Errorf("recipe %s %s %s: download %s (%s): %w", o.Recipe.Name, plan.Version, plan.Arch, d.ID, path.Base(d.URL), err)
			}
			files[d.ID] = dir
		}
	}

	// Stage next to the output so that builder can hard-link the tree into
	// its own staging directory instead of copying it.
	tree, err := os.MkdirTemp(filepath.Dir(target), atomicfile.TempPrefix+o.Recipe.Name+".bake-")
	if err != nil {
		return nil, fmt.Errorf("recipe %s: staging directory: %w", o.Recipe.Name, err)
	}
	defer os.RemoveAll(tree)
	if err := os.Chmod(tree, 0o755); err != nil {
		return nil, err
	}
	hasUnits, err := plan.Layout(ctx, tree, files)
	if err != nil {
		return nil, err
	}
	meta.ReloadManager = hasUnits
	res, err := builder.Build(ctx, builder.Options{
		Tree:            tree,
		Meta:            meta,
		Format:          o.Format,
		Compression:     o.Compression,
		Enable:          plan.Enabled(),
		Output:          target,
		Force:           o.Force,
		Digest:          o.Digest,
		SourceDateEpoch: o.SourceDateEpoch,
		Progress:        o.Progress,
	})
	if err != nil {
		return nil, fmt.Errorf("recipe %s: %w", o.Recipe.Name, err)
	}
	return &BakeResult{Plan: plan, Image: res}, nil
}
