package fsimage_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"hash/crc32"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/sysext/sysext/fsimage"
)

// gptSeeds are the fuzz seeds, built by the test: a real disk image (the
// partition table and partitions systemd-repart's layout gives, written by
// go-diskfs around an EROFS made by mkfs.erofs and a tree made by
// veritysetup) when the tools are here, and hand-made tables around the
// limits of the reader (4 KiB sectors, entry counts and sizes, overlaps,
// partitions past the end).
func gptSeeds(tb testing.TB) [][]byte {
	seeds := [][]byte{craftedGPT(512, 128, 128, nil), craftedGPT(4096, 128, 128, nil)}
	rootType, _ := fsimage.PartitionType(fsimage.DesignatorRoot, "x86-64")
	verityType, _ := fsimage.PartitionType(fsimage.DesignatorRootVerity, "x86-64")
	sigType, _ := fsimage.PartitionType(fsimage.DesignatorRootVeritySig, "x86-64")
	parts := []part{{rootType, 40, 47}, {verityType, 48, 55}, {sigType, 56, 87}}
	seeds = append(seeds,
		craftedGPT(512, 128, 128, parts),
		craftedGPT(512, 128, 128, []part{{rootType, 40, 47}, {rootType, 44, 60}}), // overlap
		craftedGPT(512, 128, 128, []part{{rootType, 40, 1 << 40}}),                // past the end
		craftedGPT(512, 1024, 4096, parts),                                        // large entries
		craftedGPT(4096, 128, 128, []part{{rootType, 6, 7}, {verityType, 8, 9}}),
	)
	if d := realDDI(tb); d != nil {
		seeds = append(seeds, d)
	}
	return seeds
}

type part struct {
	typ         string
	first, last uint64
}

// craftedGPT writes a protective MBR and a primary GPT with correct
// checksums over an image of 128 sectors.
func craftedGPT(sector, count, esize int, parts []part) []byte {
	const sectors = 128
	img := make([]byte, sectors*sector)
	img[510], img[511] = 0x55, 0xaa
	img[446+4] = 0xee
	le := binary.LittleEndian
	arrLBA := 2
	arr := make([]byte, count*esize)
	for i, p := range parts {
		e := arr[i*esize:]
		copy(e[0:16], guidBytes(p.typ))
		copy(e[16:32], guidBytes("0f0e0d0c-0b0a-0908-0706-050403020100"))
		le.PutUint64(e[32:], p.first)
		le.PutUint64(e[40:], p.last)
	}
	firstUsable := uint64(arrLBA + (len(arr)+sector-1)/sector)
	h := img[sector : sector+92]
	copy(h, "EFI PART")
	le.PutUint32(h[8:], 0x10000)
	le.PutUint32(h[12:], 92)
	le.PutUint64(h[24:], 1)
	le.PutUint64(h[32:], sectors-1)
	le.PutUint64(h[40:], firstUsable)
	le.PutUint64(h[48:], sectors-2)
	le.PutUint64(h[72:], uint64(arrLBA))
	le.PutUint32(h[80:], uint32(count))
	le.PutUint32(h[84:], uint32(esize))
	if arrLBA*sector+len(arr) <= len(img) {
		copy(img[arrLBA*sector:], arr)
	}
	le.PutUint32(h[88:], crc32.ChecksumIEEE(arr))
	le.PutUint32(h[16:], crc32.ChecksumIEEE(h))
	return img
}

// guidBytes encodes a UUID string the GPT way (first three fields
// little-endian).
func guidBytes(s string) []byte {
	var raw []byte
	for i := 0; i < len(s); i++ {
		if s[i] == '-' {
			continue
		}
		var v byte
		for _, c := range s[i : i+2] {
			v <<= 4
			switch {
			case c >= '0' && c <= '9':
				v |= byte(c - '0')
			default:
				v |= byte(c-'a') + 10
			}
		}
		raw = append(raw, v)
		i++
	}
	raw[0], raw[1], raw[2], raw[3] = raw[3], raw[2], raw[1], raw[0]
	raw[4], raw[5] = raw[5], raw[4]
	raw[6], raw[7] = raw[7], raw[6]
	return raw
}

// realDDI builds a small disk image as the builder does, from the tools
// alone (fsimage does not import the builder): mkfs.erofs, veritysetup and
// a table written by hand. Nil when the tools are missing.
func realDDI(tb testing.TB) []byte {
	mkfs, err1 := exec.LookPath("mkfs.erofs")
	vs, err2 := exec.LookPath("veritysetup")
	if err1 != nil || err2 != nil {
		return nil
	}
	dir := tb.TempDir()
	tree := filepath.Join(dir, "tree")
	rel := filepath.Join(tree, "usr/lib/extension-release.d/extension-release.fuzz")
	if err := os.MkdirAll(filepath.Dir(rel), 0o755); err != nil {
		tb.Fatal(err)
	}
	os.WriteFile(rel, []byte("ID=_any\nARCHITECTURE=x86-64\nSYSEXT_VERSION_ID=1\n"), 0o644)
	os.WriteFile(filepath.Join(tree, "usr/lib/data"), bytes.Repeat([]byte("sysext "), 3000), 0o644)
	fsImg, hashImg := filepath.Join(dir, "root"), filepath.Join(dir, "hash")
	if out, err := exec.Command(mkfs, "--quiet", "-T0", fsImg, tree).CombinedOutput(); err != nil {
		tb.Fatalf("mkfs.erofs: %v\n%s", err, out)
	}
	if out, err := exec.Command(vs, "format", fsImg, hashImg).CombinedOutput(); err != nil {
		tb.Fatalf("veritysetup: %v\n%s", err, out)
	}
	root, _ := os.ReadFile(fsImg)
	hash, _ := os.ReadFile(hashImg)
	pad := func(b []byte) []byte { return append(b, make([]byte, (4096-len(b)%4096)%4096)...) }
	root, hash = pad(root), pad(hash)
	rootType, _ := fsimage.PartitionType(fsimage.DesignatorRoot, "x86-64")
	verityType, _ := fsimage.PartitionType(fsimage.DesignatorRootVerity, "x86-64")
	first := uint64(40)
	rootLast := first + uint64(len(root)/512) - 1
	hashLast := rootLast + uint64(len(hash)/512)
	sectors := int(hashLast) + 1 + 34
	img := craftedGPTSized(sectors, []part{{rootType, first, rootLast}, {verityType, rootLast + 1, hashLast}})
	copy(img[first*512:], root)
	copy(img[(rootLast+1)*512:], hash)
	return img
}

func craftedGPTSized(sectors int, parts []part) []byte {
	small := craftedGPT(512, 128, 128, parts)
	img := make([]byte, sectors*512)
	copy(img, small[:34*512])
	le := binary.LittleEndian
	h := img[512 : 512+92]
	le.PutUint64(h[32:], uint64(sectors-1))
	le.PutUint64(h[48:], uint64(sectors-34))
	le.PutUint32(h[16:], 0)
	le.PutUint32(h[16:], crc32.ChecksumIEEE(h))
	return img
}

// FuzzReadGPT: any bytes give a disk image description whose partitions
// lie inside the image, or an error; reading the image (partition table,
// signature partition, the root partition's filesystem, the hash tree)
// never panics and never reads outside it.
func FuzzReadGPT(f *testing.F) {
	for _, s := range gptSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := fsimage.ReadGPT(bytes.NewReader(b), int64(len(b)))
		if err != nil {
			return
		}
		for _, p := range d.Partitions {
			if p.Offset < 0 || p.Size <= 0 || p.Offset+p.Size > int64(len(b)) {
				t.Fatalf("partition %d at %d+%d outside an image of %d bytes", p.Number, p.Offset, p.Size, len(b))
			}
		}
		if d.Data() == nil {
			t.Fatal("accepted without a data partition")
		}
		p := filepath.Join(t.TempDir(), "img.raw")
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		info, err := fsimage.OpenMetadata(context.Background(), p)
		if err == nil && info.DDI != nil {
			_, _ = fsimage.VerifyDDI(context.Background(), p, info.DDI)
		}
	})
}

// The real image among the seeds reads back, and its tree verifies: the
// seeds exercise the whole path, not only the table.
func TestGPTSeedsRead(t *testing.T) {
	img := realDDI(t)
	if img == nil {
		t.Skip("mkfs.erofs and veritysetup are needed for the real seed")
	}
	p := filepath.Join(t.TempDir(), "img.raw")
	os.WriteFile(p, img, 0o644)
	info, err := fsimage.OpenWith(context.Background(), p, fsimage.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if info.Name != "fuzz" || info.DDI.Filesystem != fsimage.EROFS || info.DDI.Hash() == nil {
		t.Fatalf("%+v", info.DDI)
	}
	// The partition UUIDs are not the root hash here: VerifyDDI says so.
	if _, err := fsimage.VerifyDDI(context.Background(), p, info.DDI); err == nil {
		t.Fatal("partition UUIDs that do not carry the root hash were accepted")
	}
	for _, s := range gptSeeds(t)[:2] {
		if _, err := fsimage.ReadGPT(bytes.NewReader(s), int64(len(s))); err == nil {
			t.Fatal("a table without a root partition was accepted")
		}
	}
}
