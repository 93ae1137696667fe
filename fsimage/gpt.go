package fsimage

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"os"
	"path"
	"strings"
	"unicode"
	"unicode/utf16"

	"github.com/erofs/go-erofs"

	"github.com/sysext/sysext/extension"
	"github.com/sysext/sysext/internal/ctxio"
	"github.com/sysext/sysext/verity"
)

// A Discoverable Disk Image (systemd's DDI) is a GPT disk image whose
// partition types say what each partition is (the Discoverable Partitions
// Specification): for an extension, the root partition with the tree, its
// root-verity hash partition and the root-verity-sig partition that signs
// the root hash. sysext reads the partition table itself (bounded, every
// field checked) and the root partition's filesystem through the same
// readers as a plain image, at the partition's offset: nothing is mounted.

// gptMagic starts a GPT header, at LBA 1.
const gptMagic = "EFI PART"

// Partition designators of the specification that an extension image uses.
const (
	DesignatorRoot          = "root"
	DesignatorRootVerity    = "root-verity"
	DesignatorRootVeritySig = "root-verity-sig"
	DesignatorUsr           = "usr"
	DesignatorUsrVerity     = "usr-verity"
	DesignatorUsrVeritySig  = "usr-verity-sig"
)

// dpsTypes are the partition type UUIDs of the Discoverable Partitions
// Specification for the architectures sysext knows, as systemd-id128 show
// lists them.
var dpsTypes = map[string]string{
	"root-arm":                    "69dad710-2ce4-4e3c-b16c-21a1d49abed3",
	"root-arm-verity":             "7386cdf2-203c-47a9-a498-f2ecce45a2d6",
	"root-arm-verity-sig":         "42b0455f-eb11-491d-98d3-56145ba9d037",
	"usr-arm":                     "7d0359a3-02b3-4f0a-865c-654403e70625",
	"usr-arm-verity":              "c215d751-7bcd-4649-be90-6627490a4c05",
	"usr-arm-verity-sig":          "d7ff812f-37d1-4902-a810-d76ba57b975a",
	"root-arm64":                  "b921b045-1df0-41c3-af44-4c6f280d3fae",
	"root-arm64-verity":           "df3300ce-d69f-4c92-978c-9bfb0f38d820",
	"root-arm64-verity-sig":       "6db69de6-29f4-4758-a7a5-962190f00ce3",
	"usr-arm64":                   "b0e01050-ee5f-4390-949a-9101b17104e9",
	"usr-arm64-verity":            "6e11a4e7-fbca-4ded-b9e9-e1a512bb664e",
	"usr-arm64-verity-sig":        "c23ce4ff-44bd-4b00-b2d4-b41b3419e02a",
	"root-loongarch64":            "77055800-792c-4f94-b39a-98c91b762bb6",
	"root-loongarch64-verity":     "f3393b22-e9af-4613-a948-9d3bfbd0c535",
	"root-loongarch64-verity-sig": "5afb67eb-ecc8-4f85-ae8e-ac1e7c50e7d0",
	"usr-loongarch64":             "e611c702-575c-4cbe-9a46-434fa0bf7e3f",
	"usr-loongarch64-verity":      "f46b2c26-59ae-48f0-9106-c50ed47f673d",
	"usr-loongarch64-verity-sig":  "b024f315-d330-444c-8461-44bbde524e99",
	"root-mips":                   "e9434544-6e2c-47cc-bae2-12d6deafb44c",
	"root-mips-verity":            "7a430799-f711-4c7e-8e5b-1d685bd48607",
	"root-mips-verity-sig":        "bba210a2-9c5d-45ee-9e87-ff2ccbd002d0",
	"usr-mips":                    "773b2abc-2a99-4398-8bf5-03baac40d02b",
	"usr-mips-verity":             "6e5a1bc8-d223-49b7-bca8-37a5fcceb996",
	"usr-mips-verity-sig":         "97ae158d-f216-497b-8057-f7f905770f54",
	"root-mips64":                 "d113af76-80ef-41b4-bdb6-0cff4d3d4a25",
	"root-mips64-verity":          "579536f8-6a33-4055-a95a-df2d5e2c42a8",
	"root-mips64-verity-sig":      "43ce94d4-0f3d-4999-8250-b9deafd98e6e",
	"usr-mips64":                  "57e13958-7331-4365-8e6e-35eeee17c61b",
	"usr-mips64-verity":           "81cf9d90-7458-4df4-8dcf-c8a3a404f09b",
	"usr-mips64-verity-sig":       "05816ce2-dd40-4ac6-a61d-37d32dc1ba7d",
	"root-mips-le":                "37c58c8a-d913-4156-a25f-48b1b64e07f0",
	"root-mips-le-verity":         "d7d150d2-2a04-4a33-8f12-16651205ff7b",
	"root-mips-le-verity-sig":     "c919cc1f-4456-4eff-918c-f75e94525ca5",
	"usr-mips-le":                 "0f4868e9-9952-4706-979f-3ed3a473e947",
	"usr-mips-le-verity":          "46b98d8d-b55c-4e8f-aab3-37fca7f80752",
	"usr-mips-le-verity-sig":      "3e23ca0b-a4bc-4b4e-8087-5ab6a26aa8a9",
	"root-mips64-le":              "700bda43-7a34-4507-b179-eeb93d7a7ca3",
	"root-mips64-le-verity":       "16b417f8-3e06-4f57-8dd2-9b5232f41aa6",
	"root-mips64-le-verity-sig":   "904e58ef-5c65-4a31-9c57-6af5fc7c5de7",
	"usr-mips64-le":               "c97c1f32-ba06-40b4-9f22-236061b08aa8",
	"usr-mips64-le-verity":        "3c3d61fe-b5f3-414d-bb71-8739a694a4ef",
	"usr-mips64-le-verity-sig":    "f2c2c7ee-adcc-4351-b5c6-ee9816b66e16",
	"root-ppc64":                  "912ade1d-a839-4913-8964-a10eee08fbd2",
	"root-ppc64-verity":           "9225a9a3-3c19-4d89-b4f6-eeff88f17631",
	"root-ppc64-verity-sig":       "f5e2c20c-45b2-4ffa-bce9-2a60737e1aaf",
	"usr-ppc64":                   "2c9739e2-f068-46b3-9fd0-01c5a9afbcca",
	"usr-ppc64-verity":            "bdb528a5-a259-475f-a87d-da53fa736a07",
	"usr-ppc64-verity-sig":        "0b888863-d7f8-4d9e-9766-239fce4d58af",
	"root-ppc64-le":               "c31c45e6-3f39-412e-80fb-4809c4980599",
	"root-ppc64-le-verity":        "906bd944-4589-4aae-a4e4-dd983917446a",
	"root-ppc64-le-verity-sig":    "d4a236e7-e873-4c07-bf1d-bf6cf7f1c3c6",
	"usr-ppc64-le":                "15bb03af-77e7-4d4a-b12b-c0d084f7491c",
	"usr-ppc64-le-verity":         "ee2b9983-21e8-4153-86d9-b6901a54d1ce",
	"usr-ppc64-le-verity-sig":     "c8bfbd1e-268e-4521-8bba-bf314c399557",
	"root-riscv64":                "72ec70a6-cf74-40e6-bd49-4bda08e8f224",
	"root-riscv64-verity":         "b6ed5582-440b-4209-b8da-5ff7c419ea3d",
	"root-riscv64-verity-sig":     "efe0f087-ea8d-4469-821a-4c2a96a8386a",
	"usr-riscv64":                 "beaec34b-8442-439b-a40b-984381ed097d",
	"usr-riscv64-verity":          "8f1056be-9b05-47c4-81d6-be53128e5b54",
	"usr-riscv64-verity-sig":      "d2f9000a-7a18-453f-b5cd-4d32f77a7b32",
	"root-s390x":                  "5eead9a9-fe09-4a1e-a1d7-520d00531306",
	"root-s390x-verity":           "b325bfbe-c7be-4ab8-8357-139e652d2f6b",
	"root-s390x-verity-sig":       "c80187a5-73a3-491a-901a-017c3fa953e9",
	"usr-s390x":                   "8a4f5770-50aa-4ed3-874a-99b710db6fea",
	"usr-s390x-verity":            "31741cc4-1a2a-4111-a581-e00b447d2d06",
	"usr-s390x-verity-sig":        "3f324816-667b-46ae-86ee-9b0c0c6c11b4",
	"root-x86":                    "44479540-f297-41b2-9af7-d131d5f0458a",
	"root-x86-verity":             "d13c5d3b-b5d1-422a-b29f-9454fdc89d76",
	"root-x86-verity-sig":         "5996fc05-109c-48de-808b-23fa0830b676",
	"usr-x86":                     "75250d76-8cc6-458e-bd66-bd47cc81a812",
	"usr-x86-verity":              "8f461b0d-14ee-4e81-9aa9-049b6fb97abd",
	"usr-x86-verity-sig":          "974a71c0-de41-43c3-be5d-5c5ccd1ad2c0",
	"root-x86-64":                 "4f68bce3-e8cd-4db1-96e7-fbcaf984b709",
	"root-x86-64-verity":          "2c7357ed-ebd2-46d9-aec1-23d437ec2bf5",
	"root-x86-64-verity-sig":      "41092b05-9fc8-4523-994f-2def0408b176",
	"usr-x86-64":                  "8484680c-9521-48c6-9c11-b0720656f69e",
	"usr-x86-64-verity":           "77ff5f63-e7b6-4633-acf4-1565b864c0e6",
	"usr-x86-64-verity-sig":       "e7bb33fb-06cf-4e81-8273-e543b413e2e2",
}

// dpsByType maps a lowercase type UUID to its designator and architecture.
var dpsByType = func() map[string]struct {
	designator string
	arch       extension.Arch
} {
	m := map[string]struct {
		designator string
		arch       extension.Arch
	}{}
	for name, uuid := range dpsTypes {
		for _, d := range []string{DesignatorRootVeritySig, DesignatorRootVerity, DesignatorRoot, DesignatorUsrVeritySig, DesignatorUsrVerity, DesignatorUsr} {
			base, suffix, _ := strings.Cut(d, "-") // "root", "verity-sig"
			if suffix != "" {
				suffix = "-" + suffix
			}
			if a, ok := strings.CutPrefix(name, base+"-"); ok {
				if arch, ok := strings.CutSuffix(a, suffix); ok && (suffix != "" || !strings.HasSuffix(a, "-verity") && !strings.HasSuffix(a, "-verity-sig")) {
					m[uuid] = struct {
						designator string
						arch       extension.Arch
					}{d, extension.Arch(arch)}
					break
				}
			}
		}
	}
	return m
}()

// PartitionType returns the type UUID the Discoverable Partitions
// Specification gives designator (DesignatorRoot, ...) on arch.
func PartitionType(designator string, arch extension.Arch) (string, error) {
	base, suffix, _ := strings.Cut(designator, "-")
	name := base + "-" + string(arch)
	if suffix != "" {
		name += "-" + suffix
	}
	u, ok := dpsTypes[name]
	if !ok {
		return "", fmt.Errorf("the Discoverable Partitions Specification has no %s partition type for architecture %q", designator, arch)
	}
	return u, nil
}

// DDI is what a GPT disk image holds, as far as an extension is concerned.
type DDI struct {
	SectorSize int         `json:"sectorSize"`
	DiskUUID   string      `json:"diskUUID"`
	Partitions []Partition `json:"partitions"`
	// Designator is the partition the extension's tree is in: "root", or
	// "usr" for an image that has only a /usr partition.
	Designator string         `json:"designator"`
	Arch       extension.Arch `json:"architecture"`
	Filesystem Format         `json:"filesystem"` // of that partition
	// RootHash is the root hash the partition UUIDs carry (the data
	// partition's UUID is its first 128 bits, the hash partition's its last
	// 128, as systemd expects): the whole hash for sha256 trees. Empty
	// without a hash partition.
	RootHash string `json:"rootHash,omitempty"`
	// Signature is the parsed signature partition (nil without one);
	// SignatureErr says why a present one could not be parsed.
	Signature    *verity.Signature `json:"-"`
	SignatureErr error             `json:"-"`

	data, hash, sig int // indexes into Partitions, -1 when absent
}

// Partition is one entry of the partition table.
type Partition struct {
	Number     int            `json:"number"`
	Type       string         `json:"type"`
	Designator string         `json:"designator,omitempty"` // "" for types outside the specification
	Arch       extension.Arch `json:"architecture,omitempty"`
	UUID       string         `json:"uuid"`
	Label      string         `json:"label,omitempty"`
	Offset     int64          `json:"offset"`
	Size       int64          `json:"size"`
	Flags      uint64         `json:"flags,omitempty"`
}

// Data returns the partition holding the tree.
func (d *DDI) Data() *Partition { return d.part(d.data) }

// Hash returns the dm-verity hash partition, nil when there is none.
func (d *DDI) Hash() *Partition { return d.part(d.hash) }

// SignaturePartition returns the signature partition, nil when there is
// none.
func (d *DDI) SignaturePartition() *Partition { return d.part(d.sig) }

func (d *DDI) part(i int) *Partition {
	if i < 0 || i >= len(d.Partitions) {
		return nil
	}
	return &d.Partitions[i]
}

// Limits on an untrusted partition table.
const (
	maxGPTEntries   = 1024
	maxGPTEntrySize = 4096
	maxGPTArray     = 1 << 20
)

// ErrBadGPT wraps every complaint about the partition table itself.
var ErrBadGPT = errors.New("bad GPT partition table")

// ReadGPT reads the partition table of a GPT disk image of size bytes
// (512- or 4096-byte sectors), checking both checksums and that every
// partition lies inside the image, and picks the extension's partitions:
// one root partition (or one usr partition), its verity and signature
// partitions of the same architecture. It reads nothing else.
func ReadGPT(r io.ReaderAt, size int64) (*DDI, error) {
	d, err := readGPT(r, size)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadGPT, err)
	}
	return d, nil
}

func readGPT(r io.ReaderAt, size int64) (*DDI, error) {
	var sector int64
	magic := make([]byte, 8)
	for _, s := range []int64{512, 4096} {
		if n, _ := r.ReadAt(magic, s); n == 8 && string(magic) == gptMagic {
			sector = s
			break
		}
	}
	if sector == 0 {
		return nil, errors.New(`no "EFI PART" header at 512 or 4096 bytes`)
	}
	hdr := make([]byte, sector)
	if n, err := r.ReadAt(hdr, sector); n < len(hdr) {
		return nil, fmt.Errorf("read the header: %v", orShort(err))
	}
	le := binary.LittleEndian
	hsize := le.Uint32(hdr[12:16])
	if hsize < 92 || int64(hsize) > sector {
		return nil, fmt.Errorf("header size %d", hsize)
	}
	want := le.Uint32(hdr[16:20])
	h := bytes.Clone(hdr[:hsize])
	clear(h[16:20])
	if crc32.ChecksumIEEE(h) != want {
		return nil, errors.New("the header checksum does not match: the partition table is damaged")
	}
	if my := le.Uint64(hdr[24:32]); my != 1 {
		return nil, fmt.Errorf("the primary header says it is at LBA %d, not 1", my)
	}
	sectors := uint64(size / sector)
	firstUsable, lastUsable := le.Uint64(hdr[40:48]), le.Uint64(hdr[48:56])
	if firstUsable > lastUsable || lastUsable >= sectors {
		return nil, fmt.Errorf("usable LBAs %d-%d outside an image of %d sectors", firstUsable, lastUsable, sectors)
	}
	d := &DDI{SectorSize: int(sector), DiskUUID: guid(hdr[56:72]), data: -1, hash: -1, sig: -1}
	arrayLBA, count, esize := le.Uint64(hdr[72:80]), le.Uint32(hdr[80:84]), le.Uint32(hdr[84:88])
	if count == 0 || count > maxGPTEntries || esize < 128 || esize > maxGPTEntrySize || esize%8 != 0 || uint64(count)*uint64(esize) > maxGPTArray {
		return nil, fmt.Errorf("%d entries of %d bytes", count, esize)
	}
	arrayLen := int64(count) * int64(esize)
	if arrayLBA < 2 || arrayLBA >= sectors || int64(arrayLBA)*sector+arrayLen > size {
		return nil, fmt.Errorf("the entry array at LBA %d lies outside the image", arrayLBA)
	}
	arr := make([]byte, arrayLen)
	if n, err := r.ReadAt(arr, int64(arrayLBA)*sector); n < len(arr) {
		return nil, fmt.Errorf("read the entries: %v", orShort(err))
	}
	if crc32.ChecksumIEEE(arr) != le.Uint32(hdr[88:92]) {
		return nil, errors.New("the entries' checksum does not match: the partition table is damaged")
	}
	for i := 0; i < int(count); i++ {
		e := arr[i*int(esize) : (i+1)*int(esize)]
		if allZero(e[0:16]) {
			continue
		}
		first, last := le.Uint64(e[32:40]), le.Uint64(e[40:48])
		if first > last || first < firstUsable || last > lastUsable {
			return nil, fmt.Errorf("partition %d spans LBAs %d-%d, outside the usable %d-%d", i+1, first, last, firstUsable, lastUsable)
		}
		p := Partition{
			Number: i + 1,
			Type:   guid(e[0:16]),
			UUID:   guid(e[16:32]),
			Offset: int64(first) * sector,
			Size:   int64(last-first+1) * sector,
			Flags:  le.Uint64(e[48:56]),
			Label:  label(e[56:128]),
		}
		if t, ok := dpsByType[p.Type]; ok {
			p.Designator, p.Arch = t.designator, t.arch
		}
		for _, q := range d.Partitions {
			if p.Offset < q.Offset+q.Size && q.Offset < p.Offset+p.Size {
				return nil, fmt.Errorf("partitions %d and %d overlap", q.Number, p.Number)
			}
		}
		d.Partitions = append(d.Partitions, p)
	}
	return d, d.pick()
}

// pick chooses the partitions systemd-sysext would use.
func (d *DDI) pick() error {
	find := func(designator string, arch extension.Arch) (int, error) {
		idx := -1
		for i, p := range d.Partitions {
			if p.Designator != designator || arch != "" && p.Arch != arch {
				continue
			}
			if idx >= 0 {
				q := d.Partitions[idx]
				if q.Arch != p.Arch {
					return -1, fmt.Errorf("%s partitions for %s and %s: sysext reads images for one architecture", designator, q.Arch, p.Arch)
				}
				return -1, fmt.Errorf("two %s partitions (%d and %d): sysext reads images with one", designator, q.Number, p.Number)
			}
			idx = i
		}
		return idx, nil
	}
	root, err := find(DesignatorRoot, "")
	if err != nil {
		return err
	}
	usr, err := find(DesignatorUsr, "")
	if err != nil {
		return err
	}
	base := DesignatorRoot
	switch {
	case root >= 0 && usr >= 0:
		return errors.New("both a root and a usr partition: sysext reads extension images with one of them")
	case root < 0 && usr < 0:
		return errors.New("no root or usr partition of the Discoverable Partitions Specification: not an extension image")
	case usr >= 0:
		root, base = usr, DesignatorUsr
	}
	d.data, d.Designator, d.Arch = root, base, d.Partitions[root].Arch
	if d.hash, err = find(base+"-verity", d.Arch); err != nil {
		return err
	}
	if d.sig, err = find(base+"-verity-sig", d.Arch); err != nil {
		return err
	}
	if d.sig >= 0 && d.hash < 0 {
		return fmt.Errorf("a %s-verity-sig partition without a %s-verity partition", base, base)
	}
	if d.hash >= 0 {
		a, b := strings.ReplaceAll(d.Partitions[d.data].UUID, "-", ""), strings.ReplaceAll(d.Partitions[d.hash].UUID, "-", "")
		d.RootHash = a + b
	}
	return nil
}

// guid formats a GPT GUID (its first three fields little-endian) as the
// UUID string systemd and blkid print.
func guid(b []byte) string {
	var u [16]byte
	copy(u[:], b)
	u[0], u[1], u[2], u[3] = u[3], u[2], u[1], u[0]
	u[4], u[5] = u[5], u[4]
	u[6], u[7] = u[7], u[6]
	return fmt.Sprintf("%x-%x-%x-%x-%x", u[0:4], u[4:6], u[6:8], u[8:10], u[10:16])
}

// label decodes a partition name (UTF-16LE, up to 36 code units); what
// cannot be printed safely becomes U+FFFD.
func label(b []byte) string {
	u := make([]uint16, 0, len(b)/2)
	for i := 0; i+1 < len(b); i += 2 {
		c := binary.LittleEndian.Uint16(b[i:])
		if c == 0 {
			break
		}
		u = append(u, c)
	}
	return strings.Map(func(r rune) rune {
		if !unicode.IsGraphic(r) || unicode.Is(unicode.Bidi_Control, r) {
			return unicode.ReplacementChar
		}
		return r
	}, string(utf16.Decode(u)))
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

func orShort(err error) error {
	if err == nil || errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

// openDDI reads the partition table, the signature partition and opens the
// data partition's filesystem. image is the file's path for the tools; ""
// means the Go readers only (fuzzing reads images from memory).
func openDDI(ctx context.Context, src io.ReaderAt, image string, size int64) (*DDI, tree, error) {
	d, err := ReadGPT(src, size)
	if err != nil {
		return nil, nil, err
	}
	if sp := d.SignaturePartition(); sp != nil {
		if sp.Size > verity.MaxSignaturePartition {
			d.SignatureErr = fmt.Errorf("the %s partition has %d bytes, more than systemd reads (%d)", sp.Designator, sp.Size, verity.MaxSignaturePartition)
		} else {
			b := make([]byte, sp.Size)
			if n, err := src.ReadAt(b, sp.Offset); n < len(b) {
				return nil, nil, fmt.Errorf("read the %s partition: %w", sp.Designator, orShort(err))
			}
			d.Signature, d.SignatureErr = verity.ParseSignaturePartition(b)
		}
	}
	p := d.Data()
	format, err := Detect(io.NewSectionReader(src, p.Offset, p.Size))
	if err != nil || format == GPT {
		return nil, nil, fmt.Errorf("the %s partition holds no squashfs or EROFS filesystem", p.Designator)
	}
	d.Filesystem = format
	t, err := openPartitionTree(ctx, src, image, p.Offset, p.Size, format)
	if err != nil {
		return nil, nil, fmt.Errorf("the %s partition: %w", p.Designator, err)
	}
	if d.Designator == DesignatorUsr {
		t = &usrTree{t}
	}
	return d, t, nil
}

// openPartitionTree opens a filesystem that starts at off in f with the
// same bounded readers as a plain image, in place. What needs a file of its
// own gets the partition's offset (unsquashfs -o for a squashfs variant
// our reader lacks) or, for the rare compressed EROFS metadata file that
// erofs-utils 1.5 must extract (its tools take no offset), a private copy
// of the partition, made only then and removed on close.
func openPartitionTree(ctx context.Context, src io.ReaderAt, image string, off, size int64, format Format) (tree, error) {
	pt := &partTree{src: src, tools: image != "", off: off, size: size, erofs: format == EROFS}
	t, err := openTree(ctx, io.NewSectionReader(src, off, size), "", size, format)
	if errors.Is(err, errUnsupported) && format == Squashfs && image != "" {
		t, err = newUnsquashfsTreeAt(ctx, image, off)
	}
	if err != nil {
		return nil, err
	}
	pt.tree = t
	return pt, nil
}

// partTree reads a filesystem inside a partition.
type partTree struct {
	tree
	src       io.ReaderAt
	tools     bool // the tools may run (the image is a file)
	off, size int64
	erofs     bool
	tmp       string        // private copy of the partition, when a tool needed one
	extract   *erofsExtract // for EROFS files the Go reader cannot decompress
}

func (p *partTree) readFile(ctx context.Context, name string, limit int64) ([]byte, error) {
	data, err := p.tree.readFile(ctx, name, limit)
	if err == nil || !p.erofs || !p.tools || !errors.Is(err, erofs.ErrNotImplemented) {
		return data, err
	}
	if p.extract == nil {
		tmp, err := p.copyOut(ctx)
		if err != nil {
			return nil, err
		}
		p.extract = &erofsExtract{image: tmp}
	}
	return p.extract.readFile(ctx, name, limit)
}

// copyOut writes the partition to a private temp file once.
func (p *partTree) copyOut(ctx context.Context) (string, error) {
	if p.tmp != "" {
		return p.tmp, nil
	}
	t, err := os.CreateTemp("", ".#sysext-partition-")
	if err != nil {
		return "", err
	}
	p.tmp = t.Name()
	_, err = io.Copy(t, ctxio.Reader(ctx, io.NewSectionReader(p.src, p.off, p.size)))
	if cerr := t.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", fmt.Errorf("copy the partition out for the filesystem's own tool: %w", err)
	}
	return p.tmp, nil
}

func (p *partTree) close() error {
	if p.tree != nil {
		p.tree.close()
	}
	if p.extract != nil {
		p.extract.close()
	}
	if p.tmp != "" {
		os.Remove(p.tmp)
	}
	return nil
}

// usrTree reads a usr partition, which systemd mounts at /usr: the paths
// we look up start with "usr/".
type usrTree struct{ tree }

func (u *usrTree) strip(p string) (string, bool) {
	if p == "usr" {
		return ".", true
	}
	return strings.CutPrefix(p, "usr/")
}

func (u *usrTree) readDir(ctx context.Context, dir string) ([]entry, error) {
	p, ok := u.strip(dir)
	if !ok {
		return nil, fs.ErrNotExist
	}
	return u.tree.readDir(ctx, p)
}

func (u *usrTree) walk(ctx context.Context, fn func(fileMeta) error) (bool, error) {
	return u.tree.walk(ctx, func(m fileMeta) error {
		m.path = path.Join("usr", m.path)
		return fn(m)
	})
}

func (u *usrTree) readFile(ctx context.Context, name string, limit int64) ([]byte, error) {
	p, ok := u.strip(name)
	if !ok {
		return nil, fmt.Errorf("read %s: not in the usr partition", name)
	}
	return u.tree.readFile(ctx, p, limit)
}

// VerifyDDI reads a disk image's data and hash partitions in full and
// checks, as the kernel would at every read, that the dm-verity tree
// describes the data; then that the tree's root hash is the one the
// partition UUIDs carry (else systemd would not pick the partitions) and
// the one the signature partition signs. It does not decide whether the
// signer is trusted (verity.Signature.Check does, against a policy).
// Errors say which of these links broke.
func VerifyDDI(ctx context.Context, path string, d *DDI) (*verity.Tree, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return verifyDDI(ctx, f, d)
}

// ErrNoVerity: a disk image without a hash partition.
var ErrNoVerity = errors.New("has no dm-verity hash partition: nothing protects its data")

func verifyDDI(ctx context.Context, f io.ReaderAt, d *DDI) (*verity.Tree, error) {
	data, hash := d.Data(), d.Hash()
	if hash == nil {
		return nil, fmt.Errorf("the disk image %w", ErrNoVerity)
	}
	tree, err := verity.Verify(ctx, io.NewSectionReader(f, data.Offset, data.Size), data.Size, io.NewSectionReader(f, hash.Offset, hash.Size), hash.Size)
	if err != nil {
		return nil, fmt.Errorf("the %s and %s partitions: %w", data.Designator, hash.Designator, err)
	}
	root := tree.RootHashHex()
	if len(root) < 64 || root[:32] != d.RootHash[:32] || root[len(root)-32:] != d.RootHash[32:] {
		return nil, fmt.Errorf("the hash tree's root hash %s is not the one the partition UUIDs carry (%s, %s): systemd would not pick these partitions", root, data.UUID, hash.UUID)
	}
	if d.SignatureErr != nil {
		return nil, d.SignatureErr
	}
	if d.Signature != nil && d.Signature.RootHash != root {
		return nil, fmt.Errorf("%w (it signs %s, the tree's is %s)", verity.ErrRootHashMismatch, d.Signature.RootHash, root)
	}
	return tree, nil
}
