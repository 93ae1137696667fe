// Package tartest makes tar archives for tests of extraction: Tar writes
// the entries tests list (File, Dir, Symlink, Hardlink, any Entry), and
// Sparse crafts one that archive/tar will not write.
package tartest

import (
	"archive/tar"
	"bytes"
	"fmt"
	"testing"
	"time"
)

// Sparse is a tar holding one PAX 1.0 sparse file, as GNU tar --sparse
// --format=posix writes it: name, size bytes long, of which only the last
// byte is data ('x') and the rest a hole. The tar itself is 3.5 KiB
// (about 200 bytes gzipped), whatever size is.
func Sparse(name string, size int64) []byte {
	var b bytes.Buffer
	recs := paxRecord("GNU.sparse.major", "1") + paxRecord("GNU.sparse.minor", "0") +
		paxRecord("GNU.sparse.name", name) + paxRecord("GNU.sparse.realsize", fmt.Sprint(size))
	b.Write(ustar("PaxHeaders/"+name, tar.TypeXHeader, int64(len(recs))))
	b.Write(pad512([]byte(recs)))
	// The sparse map (one region: offset, length) precedes the data.
	body := append(pad512([]byte(fmt.Sprintf("1\n%d\n1\n", size-1))), 'x')
	b.Write(ustar("GNUSparseFile.0/"+name, tar.TypeReg, int64(len(body))))
	b.Write(pad512(body))
	b.Write(make([]byte, 1024))
	return b.Bytes()
}

// ustar is a raw ustar header block (mode 0644, uid and gid 0).
func ustar(name string, typ byte, size int64) []byte {
	h := make([]byte, 512)
	copy(h[0:100], name)
	copy(h[100:108], "0000644\x00")
	copy(h[108:116], "0000000\x00")
	copy(h[116:124], "0000000\x00")
	copy(h[124:136], fmt.Sprintf("%011o\x00", size))
	copy(h[136:148], "00000000000\x00")
	h[156] = typ
	copy(h[257:263], "ustar\x00")
	copy(h[263:265], "00")
	for i := 148; i < 156; i++ {
		h[i] = ' ' // the checksum counts its own field as spaces
	}
	sum := 0
	for _, c := range h {
		sum += int(c)
	}
	copy(h[148:156], fmt.Sprintf("%06o\x00 ", sum))
	return h
}

func pad512(b []byte) []byte {
	if r := len(b) % 512; r != 0 {
		b = append(b, make([]byte, 512-r)...)
	}
	return b
}

// paxRecord formats "LEN key=value\n", LEN counting itself.
func paxRecord(k, v string) string {
	s := " " + k + "=" + v + "\n"
	for d := 1; ; d++ {
		if n := d + len(s); len(fmt.Sprint(n)) == d {
			return fmt.Sprint(n) + s
		}
	}
}

// Entry is one entry of a test archive that archive/tar writes.
type Entry struct {
	Name string
	Type byte
	Body string // a regular file's content
	Link string // a symlink's or hard link's target
	Mode int64
	UID  int // the gid too
	PAX  map[string]string
}

// File is a regular file, mode 0644.
func File(name, body string) Entry {
	return Entry{Name: name, Type: tar.TypeReg, Body: body, Mode: 0o644}
}

// Dir is a directory, mode 0755.
func Dir(name string) Entry { return Entry{Name: name, Type: tar.TypeDir, Mode: 0o755} }

// Symlink is a symbolic link to target.
func Symlink(name, target string) Entry {
	return Entry{Name: name, Type: tar.TypeSymlink, Link: target, Mode: 0o777}
}

// Hardlink is a hard link to target, an earlier entry's name.
func Hardlink(name, target string) Entry {
	return Entry{Name: name, Type: tar.TypeLink, Link: target, Mode: 0o644}
}

// Tar writes es as a PAX archive, every entry dated 1700000000 (a
// character device is 1:3, /dev/null's).
func Tar(t testing.TB, es ...Entry) []byte {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for _, e := range es {
		h := &tar.Header{Name: e.Name, Typeflag: e.Type, Linkname: e.Link, Mode: e.Mode, Uid: e.UID, Gid: e.UID,
			ModTime: time.Unix(1700000000, 0), PAXRecords: e.PAX, Format: tar.FormatPAX}
		if e.Type == tar.TypeReg {
			h.Size = int64(len(e.Body))
		}
		if e.Type == tar.TypeChar {
			h.Devmajor, h.Devminor = 1, 3
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if e.Type == tar.TypeReg {
			if _, err := tw.Write([]byte(e.Body)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}
