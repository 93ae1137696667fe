package ocitest

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/opencontainers/go-digest"
)

// BenchLayer makes a gzip layer of about size bytes for benchmarks: the
// directories dirs (each ending in '/'), then, under top (ending in '/'),
// many small files in subdirectories of 100 and a few of up to 10 MiB,
// filled half with random and half with repetitive chunks, like binaries
// and text. The same rng state gives the same layer.
func BenchLayer(dirs []string, top string, size int64, rng *rand.Rand) Layer {
	var gz bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&gz, gzip.BestSpeed)
	dh := digest.SHA256.Digester()
	tw := tar.NewWriter(io.MultiWriter(zw, dh.Hash()))
	modTime := time.Unix(1700000000, 0)
	dir := func(name string) {
		tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeDir, Mode: 0o755, ModTime: modTime})
	}
	text := bytes.Repeat([]byte("the quick brown fox jumps over the lazy dog 0123456789\n"), 1200)
	chunk := make([]byte, 64<<10)
	file := func(name string, sz int64) {
		tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o755, Size: sz, ModTime: modTime})
		for left := sz; left > 0; {
			c := chunk
			if rng.IntN(2) == 0 {
				for i := 0; i < len(c); i += 8 {
					v := rng.Uint64()
					for j := 0; j < 8 && i+j < len(c); j++ {
						c[i+j] = byte(v >> (8 * j))
					}
				}
			} else {
				c = text[:len(chunk)]
			}
			c = c[:min(int64(len(c)), left)]
			tw.Write(c)
			left -= int64(len(c))
		}
	}
	for _, d := range append(dirs, top) {
		dir(d)
	}
	var written int64
	for i := 0; written < size/2; i++ {
		if i%100 == 0 {
			dir(fmt.Sprintf("%sd%d/", top, i/100))
		}
		sz := int64(1<<10 + rng.IntN(48<<10))
		file(fmt.Sprintf("%sd%d/f%d", top, i/100, i), sz)
		written += sz
	}
	for i := 0; written < size; i++ {
		sz := min(int64(10<<20), size-written)
		file(fmt.Sprintf("%sbig%d", top, i), sz)
		written += sz
	}
	tw.Close()
	zw.Close()
	return Layer{Blob: gz.Bytes(), DiffID: dh.Digest()}
}
