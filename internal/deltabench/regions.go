package deltabench

import (
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"slices"
)

// Region is a named part of an image.
type Region struct {
	Name     string
	Off, End int64
}

// SquashfsRegions splits a squashfs image by its superblock into the
// superblock, the data blocks and fragments, the inode table, the
// directory table and the lookup tables behind it (fragment, export, id,
// xattr), and the padding after bytes_used.
func SquashfsRegions(img []byte) ([]Region, error) {
	if len(img) < 96 || string(img[:4]) != "hsqs" {
		return nil, errors.New("not a squashfs image")
	}
	le := binary.LittleEndian
	used := int64(le.Uint64(img[40:]))
	inodes := int64(le.Uint64(img[64:]))
	dirs := int64(le.Uint64(img[72:]))
	if !(96 <= inodes && inodes <= dirs && dirs <= used && used <= int64(len(img))) {
		return nil, errors.New("squashfs superblock tables out of order")
	}
	return []Region{
		{"superblock", 0, 96},
		{"data and fragments", 96, inodes},
		{"inode table", inodes, dirs},
		{"directory and lookup tables", dirs, used},
		{"padding", used, int64(len(img))},
	}, nil
}

// ByRegion adds up the bytes of rs in each region.
func ByRegion(rs []Range, regions []Region) map[string]int64 {
	out := map[string]int64{}
	for _, r := range rs {
		for _, g := range regions {
			lo, hi := max(r.Off, g.Off), min(r.Off+r.Len, g.End)
			if hi > lo {
				out[g.Name] += hi - lo
			}
		}
	}
	return out
}

// ChangedFiles returns the regular files of the tree new that are not in
// old with the same content, and their total size.
func ChangedFiles(old, new string) ([]string, int64, error) {
	var names []string
	var total int64
	err := filepath.WalkDir(new, func(p string, d os.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		rel, _ := filepath.Rel(new, p)
		a, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if b, err := os.ReadFile(filepath.Join(old, rel)); err == nil && slices.Equal(a, b) {
			return nil
		}
		names = append(names, rel)
		total += int64(len(a))
		return nil
	})
	return names, total, err
}
