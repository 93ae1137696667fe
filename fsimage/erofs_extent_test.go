package fsimage

import (
	"context"
	"encoding/base64"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sysext/sysext/internal/testenv"
)

// Both ways of reading a compressed EROFS file: from its one cluster, and
// by extracting the image when it spans several.
func TestErofsCompressedFile(t *testing.T) {
	testenv.RequireTool(t, "mkfs.erofs")
	testenv.RequireTool(t, "dump.erofs")
	testenv.RequireTool(t, "fsck.erofs")
	const name = "usr/lib/extension-release.d/extension-release.x"
	rnd := make([]byte, 12<<10)
	for i := range rnd {
		rnd[i] = byte(uint32(i)*2654435761>>13) ^ byte(i*7)
	}
	for _, tc := range []struct {
		what    string
		content string
		args    []string
		oneCl   bool
	}{
		{"one lz4 cluster", "ID=_any\n" + strings.Repeat("# compressible\n", 900), []string{"-zlz4hc"}, true},
		{"tail packed", "ID=_any\n" + strings.Repeat("# compressible\n", 900), []string{"-zlz4hc,12", "-C65536", "-Efragments,ztailpacking"}, true},
		{"several clusters", "ID=_any\n# " + base64.StdEncoding.EncodeToString(rnd) + "\n", []string{"-zlz4"}, false},
	} {
		t.Run(tc.what, func(t *testing.T) {
			tree := t.TempDir()
			p := filepath.Join(tree, name)
			os.MkdirAll(filepath.Dir(p), 0o755)
			if err := os.WriteFile(p, []byte(tc.content), 0o644); err != nil {
				t.Fatal(err)
			}
			img := filepath.Join(t.TempDir(), "x.raw")
			if out, err := exec.Command("mkfs.erofs", append(append([]string{"--quiet"}, tc.args...), img, tree)...).CombinedOutput(); err != nil {
				t.Fatalf("mkfs.erofs: %v\n%s", err, out)
			}
			data, ok := readCompressedExtent(context.Background(), img, name, 1<<20)
			if ok != tc.oneCl || (ok && string(data) != tc.content) {
				t.Fatalf("readCompressedExtent: ok=%v (want %v), content equal=%v", ok, tc.oneCl, string(data) == tc.content)
			}
			e := &erofsExtract{image: img}
			defer e.close()
			data, err := e.readFile(context.Background(), name, 1<<20)
			if err != nil || string(data) != tc.content {
				t.Fatalf("readFile: %v, content equal=%v", err, string(data) == tc.content)
			}
			if tc.oneCl == (e.root != nil) {
				t.Fatalf("extracted the image: %v, want %v", e.root != nil, !tc.oneCl)
			}
		})
	}
}
