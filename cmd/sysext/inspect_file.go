package main

import (
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/sysext/sysext/extension"
	"github.com/sysext/sysext/fsimage"
	"github.com/sysext/sysext/internal/smallfile"
)

// hostOSReleasePaths are where os-release(5) says to look, in order.
var hostOSReleasePaths = []string{"/etc/os-release", "/usr/lib/os-release"}

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
	j.Special = newSpecialJSON(info.SpecialFiles, info.CapabilitiesUnread)
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
	if want := info.Name + ".raw"; filepath.Base(path) != want {
		_, err = printf(c.OutOrStdout(), "%-15s systemd-sysext loads it as %s (a copy or a link of that name in /var/lib/extensions)\n", "note:", want)
	}
	return err
}

// readOSRelease reads the os-release file to judge against: the given one,
// or the host's.
func readOSRelease(path string) (string, *extension.Release, error) {
	candidates := hostOSReleasePaths
	if path != "" {
		candidates = []string{path}
	}
	for _, p := range candidates {
		data, err := readSmallFile(p, extension.MaxReleaseSize)
		if errors.Is(err, fs.ErrNotExist) && path == "" {
			continue
		}
		if err != nil && path != "" {
			return "", nil, usageError("--os-release: %v", err)
		}
		if err != nil {
			return "", nil, fmt.Errorf("host os-release: %w", err)
		}
		rel, err := extension.ParseRelease(data)
		if err != nil {
			return "", nil, fmt.Errorf("%s: %w", p, err)
		}
		return p, rel, nil
	}
	return "", nil, errors.New("this host has no /etc/os-release or /usr/lib/os-release: give one with --os-release FILE")
}

func readSmallFile(p string, limit int64) ([]byte, error) {
	data, err := smallfile.Read(p, limit)
	var tl *smallfile.TooLargeError
	if errors.As(err, &tl) {
		return nil, fmt.Errorf("%s is more than %d bytes", p, limit)
	}
	return data, err
}
