package activate

import (
	"context"
	"testing"
)

// BenchmarkCheckHost is the preflight a node runs before every pull,
// update and sync: read /proc/filesystems, the module lists, the mount
// table and the root's systemd version, then judge.
func BenchmarkCheckHost(b *testing.B) {
	images := []Image{squashImage}
	for i := 0; i < b.N; i++ {
		Check(context.Background(), System{}, images, false)
	}
}

// BenchmarkPreflight is the pure judgement alone.
func BenchmarkPreflight(b *testing.B) {
	m, err := ParseMountInfo([]byte(bootcMountInfo))
	if err != nil {
		b.Fatal(err)
	}
	f := Facts{Filesystems: map[string]bool{"squashfs": true, "overlay": true}, Stacking: AnalyzeStacking(m), SystemdVersion: 257}
	images := []Image{squashImage}
	for i := 0; i < b.N; i++ {
		Preflight(f, images, true)
	}
}
