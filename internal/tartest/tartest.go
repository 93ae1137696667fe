// Package tartest crafts tar archives that archive/tar will not write, for
// tests of extraction.
package tartest

import (
	"archive/tar"
	"bytes"
	"fmt"
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
