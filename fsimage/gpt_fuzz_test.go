package fsimage

// The GPT disk image reader's fuzz target, in the pattern of fuzz_test.go:
// the seed corpus in testdata/fuzz/FuzzGPT/ holds small disk images made
// with the real tools (mksquashfs, veritysetup, a signature) around a
// table written here, and tables at the reader's limits; rewrite them with
// `go test ./fsimage -run TestGPTFuzzSeeds -update-seeds`.

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"hash/crc32"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sysext/sysext/internal/testenv"
	"github.com/sysext/sysext/verity"
)

// FuzzGPT: any bytes read as a disk image (the table, the signature
// partition, the root partition's filesystem with the Go readers, the
// hash tree) end with an error or not, without a panic, with partitions
// inside the image and a one-line error.
func FuzzGPT(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		ctx, cancel := context.WithTimeout(context.Background(), fuzzDeadline)
		defer cancel()
		r := bytes.NewReader(data)
		d, tr, err := openDDI(ctx, r, "", int64(len(data)))
		if errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("reading a %d-byte disk image did not end within %v", len(data), fuzzDeadline)
		}
		if err != nil {
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("a multi-line error: %q", err)
			}
			return
		}
		defer tr.close()
		for _, p := range d.Partitions {
			if p.Offset < 0 || p.Size <= 0 || p.Offset+p.Size > int64(len(data)) {
				t.Fatalf("partition %d at %d+%d outside an image of %d bytes", p.Number, p.Offset, p.Size, len(data))
			}
		}
		_ = readMetadata(ctx, tr, &Info{})
		if d.Hash() != nil {
			_, _ = verifyDDI(ctx, r, d)
		}
	})
}

type gptSeedPart struct {
	designator  string
	first, last uint64
}

// gptCrafted are small tables the reader must refuse: no root partition,
// an overlap, a partition past the end, a spoilt checksum (kept small: the
// corpus format spells every zero byte out).
var gptCrafted = map[string]func() []byte{
	"no-root": func() []byte { return gptTable(512, 4, 128, 10, nil, 0) },
	"overlap": func() []byte {
		return gptTable(512, 4, 128, 10, []gptSeedPart{{"root", 3, 5}, {"root-verity", 5, 7}}, 0)
	},
	"past-end": func() []byte { return gptTable(512, 4, 128, 10, []gptSeedPart{{"root", 3, 1 << 40}}, 0) },
	"bad-crc":  func() []byte { return gptTable(512, 4, 128, 10, []gptSeedPart{{"root", 3, 5}}, 1) },
}

// gptTable writes a protective MBR and a primary GPT (x86-64 types) over
// an image of sectors sectors; corrupt > 0 spoils the header checksum.
func gptTable(sector, count, esize, sectors int, parts []gptSeedPart, corrupt byte) []byte {
	img := make([]byte, sectors*sector)
	img[510], img[511] = 0x55, 0xaa
	img[446+4] = 0xee
	le := binary.LittleEndian
	arr := make([]byte, count*esize)
	for i, p := range parts {
		typ, _ := PartitionType(p.designator, "x86-64")
		e := arr[i*esize:]
		copy(e[0:16], gptGUID(typ))
		copy(e[16:32], gptGUID("0f0e0d0c-0b0a-0908-0706-050403020100"))
		le.PutUint64(e[32:], p.first)
		le.PutUint64(e[40:], p.last)
	}
	copy(img[2*sector:], arr)
	h := img[sector : sector+92]
	copy(h, "EFI PART")
	le.PutUint32(h[8:], 0x10000)
	le.PutUint32(h[12:], 92)
	le.PutUint64(h[24:], 1)
	le.PutUint64(h[32:], uint64(sectors-1))
	le.PutUint64(h[40:], uint64(2+(len(arr)+sector-1)/sector))
	le.PutUint64(h[48:], uint64(sectors-2))
	le.PutUint64(h[72:], 2)
	le.PutUint32(h[80:], uint32(count))
	le.PutUint32(h[84:], uint32(esize))
	le.PutUint32(h[88:], crc32.ChecksumIEEE(arr))
	le.PutUint32(h[16:], crc32.ChecksumIEEE(h)+uint32(corrupt))
	return img
}

func gptGUID(s string) []byte {
	b, _ := hex.DecodeString(strings.ReplaceAll(s, "-", ""))
	b[0], b[1], b[2], b[3] = b[3], b[2], b[1], b[0]
	b[4], b[5] = b[5], b[4]
	b[6], b[7] = b[7], b[6]
	return b
}

// realDDISeed makes a small signed disk image with the tools: a squashfs
// root (mksquashfs), its tree with 512-byte blocks (veritysetup, so the
// seed stays small), a signature partition; partition UUIDs from the root
// hash, as systemd wants them.
func realDDISeed(t *testing.T) []byte {
	testenv.RequireTool(t, "mksquashfs")
	testenv.RequireTool(t, "veritysetup")
	dir := t.TempDir()
	tree := filepath.Join(dir, "tree")
	rel := filepath.Join(tree, "usr/lib/extension-release.d/extension-release.seed")
	os.MkdirAll(filepath.Dir(rel), 0o755)
	os.WriteFile(rel, []byte("ID=_any\nARCHITECTURE=x86-64\nSYSEXT_VERSION_ID=1\n"), 0o644)
	os.MkdirAll(filepath.Join(tree, "usr/bin"), 0o755)
	os.WriteFile(filepath.Join(tree, "usr/bin/big"), []byte(strings.Repeat("0123456789abcdef", 600)), 0o644)
	fsImg, hashImg := filepath.Join(dir, "root"), filepath.Join(dir, "hash")
	for _, c := range [][]string{
		{"mksquashfs", tree, fsImg, "-noappend", "-quiet", "-no-progress", "-all-root", "-mkfs-time", "0", "-all-time", "0", "-comp", "zstd"},
		{"veritysetup", "format", "--data-block-size=512", "--hash-block-size=512", fsImg, hashImg},
	} {
		if out, err := exec.Command(c[0], c[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", c[0], err, out)
		}
	}
	root, _ := os.ReadFile(fsImg)
	hash, _ := os.ReadFile(hashImg)
	pad := func(b []byte) []byte { return append(b, make([]byte, (512-len(b)%512)%512)...) }
	root, hash = pad(root), pad(hash)
	tr, err := verity.Verify(context.Background(), bytes.NewReader(root), int64(len(root)), bytes.NewReader(hash), int64(len(hash)))
	if err != nil {
		t.Fatal(err)
	}
	k, c, err := verity.GenerateCertificate("fuzz seed", 0, time.Unix(0, 0))
	if err != nil {
		t.Fatal(err)
	}
	key, _ := verity.ParsePrivateKey(k)
	certs, _ := verity.ParseCertificates(c)
	sig, err := verity.Sign(tr.RootHash, certs[0], key)
	if err != nil {
		t.Fatal(err)
	}
	sigData, _ := sig.Marshal()
	first := uint64(4) // 4 entries: one sector of table
	rootLast := first + uint64(len(root)/512) - 1
	hashLast := rootLast + uint64(len(hash)/512)
	sigLast := hashLast + uint64(len(sigData)/512)
	img := gptTable(512, 4, 128, int(sigLast)+3, []gptSeedPart{{"root", first, rootLast}, {"root-verity", rootLast + 1, hashLast}, {"root-verity-sig", hashLast + 1, sigLast}}, 0)
	rh := hex.EncodeToString(tr.RootHash)
	arr := img[2*512 : 3*512]
	copy(arr[16:32], gptGUID(rh[0:8]+"-"+rh[8:12]+"-"+rh[12:16]+"-"+rh[16:20]+"-"+rh[20:32]))
	copy(arr[128+16:128+32], gptGUID(rh[32:40]+"-"+rh[40:44]+"-"+rh[44:48]+"-"+rh[48:52]+"-"+rh[52:64]))
	h := img[512 : 512+92]
	binary.LittleEndian.PutUint32(h[88:], crc32.ChecksumIEEE(img[2*512:2*512+4*128]))
	binary.LittleEndian.PutUint32(h[16:], 0)
	binary.LittleEndian.PutUint32(h[16:], crc32.ChecksumIEEE(h))
	copy(img[first*512:], root)
	copy(img[(rootLast+1)*512:], hash)
	copy(img[(hashLast+1)*512:], sigData)
	return img
}

// TestGPTFuzzSeeds checks FuzzGPT's checked-in corpus: the real disk image
// reads, its tree verifies and its signature is well formed; every crafted
// table is refused. With -update-seeds it first rewrites them.
func TestGPTFuzzSeeds(t *testing.T) {
	if *updateSeeds {
		writeSeed(t, "FuzzGPT", "squashfs-signed", realDDISeed(t))
		for name, mk := range gptCrafted {
			writeSeed(t, "FuzzGPT", name, mk())
		}
	}
	data := readSeed(t, "FuzzGPT", "squashfs-signed")
	d, tr, err := openDDI(context.Background(), bytes.NewReader(data), "", int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	defer tr.close()
	info := &Info{}
	if err := readMetadata(context.Background(), tr, info); err != nil || info.Name != "seed" {
		t.Fatalf("seed image: %v %q", err, info.Name)
	}
	if d.Signature == nil || d.SignatureErr != nil {
		t.Fatalf("signature partition: %v", d.SignatureErr)
	}
	if _, err := verifyDDI(context.Background(), bytes.NewReader(data), d); err != nil {
		t.Fatal(err)
	}
	for name := range gptCrafted {
		b := readSeed(t, "FuzzGPT", name)
		if _, err := ReadGPT(bytes.NewReader(b), int64(len(b))); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
