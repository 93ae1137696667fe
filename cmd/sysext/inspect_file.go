package main

import (
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/sysext/sysext/extension"
	"github.com/sysext/sysext/fsimage"
	"github.com/sysext/sysext/internal/osrelease"
)

// runInspectFile prints an image file's metadata and whether it would
// merge on the host (or the os-release given with --os-release).
func runInspectFile(c *cobra.Command, opts inspectOptions, path string) error {
	hostFile, hostRel, err := readOSRelease(opts.OSRelease)
	if err != nil {
		return err
	}
	info, err := fsimage.OpenWith(c.Context(), path, fsimage.Options{Digest: true, CacheDigest: true, SpecialFiles: true})
	if err != nil {
		return err
	}
	j := newImageJSON(info.Path, string(info.Format), info.Size, info.Digest, info.Meta, info.Release, info.Upholds)
	j.DigestCached = info.DigestCached
	if info.Format == fsimage.EROFS {
		j.Compression = erofsCompression(info.Compression)
	}
	j.Special = newSpecialJSON(info.SpecialFiles, info.CapabilitiesUnread)
	if info.DDI != nil {
		j.DDI = inspectDDI(c.Context(), info.Path, info.DDI)
	}
	if j.Compatible, err = compatibility(hostFile, hostRel, info.Release); err != nil {
		return err
	}
	if opts.JSON {
		return printJSON(c.OutOrStdout(), j)
	}
	if err := printImage(c.OutOrStdout(), j); err != nil {
		return err
	}
	// systemd-sysext 252 only loads an image whose file name is the NAME of
	// its extension-release file; NAME-VERSION-ARCH.raw is silently skipped.
	if want := info.Name + extension.ImageSuffix; filepath.Base(path) != want {
		_, err = printf(c.OutOrStdout(), "%-15s systemd-sysext loads it as %s (a copy or a link of that name in /var/lib/extensions)\n", "note:", want)
	}
	return err
}

// readOSRelease reads the os-release file to judge against: the given one,
// or the host's.
func readOSRelease(path string) (string, *extension.Release, error) {
	if path != "" {
		rel, err := osrelease.ReadFile(path)
		if errors.As(err, new(*osrelease.ParseError)) {
			return "", nil, err
		}
		if err != nil {
			return "", nil, usageError("--os-release: %v", err)
		}
		return path, rel, nil
	}
	rel, p, err := osrelease.Read("/")
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil, errors.New("this host has no /etc/os-release or /usr/lib/os-release: give one with --os-release FILE")
	}
	if err != nil {
		return "", nil, fmt.Errorf("host os-release: %w", err)
	}
	return p, rel, nil
}
