package ocitest_test

import (
	"bytes"
	"context"
	"os"
	"testing"
	"time"

	"github.com/sysext/sysext/internal/testenv"
	"github.com/sysext/sysext/oci"
	"github.com/sysext/sysext/oci/ocitest"
)

// Through a shaped link the bytes arrive intact, and no faster than the
// link allows: each request waits at least a round trip (plus the
// handshake's), and the blob at least its size over the rate.
func TestShaped(t *testing.T) {
	reg := ocitest.NewOlareg(t)
	link := ocitest.Link{Rate: 4 << 20, PerConn: 2 << 20, Delay: 20 * time.Millisecond}
	shaped := ocitest.Shaped(t, reg, link)
	payload := bytes.Repeat([]byte("shaped link "), 300000) // 3.6 MB, squashfs stores it compressed
	file := ocitest.Squashfs(t, ocitest.Meta("hello", "1.0", "x86-64"), payload)
	ctx := context.Background()
	tg, ref := reg.Open(t, "ext/hello:1.0")
	if _, err := oci.Push(ctx, tg, ref, []string{file}, oci.PushOptions{}); err != nil {
		t.Fatal(err)
	}
	stg, sref := shaped.Open(t, "ext/hello:1.0")
	start := time.Now()
	r, err := oci.Resolve(ctx, stg, sref, "x86-64")
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < 4*link.Delay {
		t.Fatalf("resolve took %v through a link with %v each way", d, link.Delay)
	}
	dir := testenv.TempDirNoLeak(t, ".#")
	start = time.Now()
	d, err := oci.Download(ctx, stg, &r.Entry, oci.DownloadOptions{Dir: dir, Concurrency: 1})
	if err != nil {
		t.Fatal(err)
	}
	if min := time.Duration(float64(r.Entry.Layer.Size) / link.PerConn * float64(time.Second)); time.Since(start) < min*9/10 {
		t.Fatalf("%d bytes in %v through a link of %v bytes/s per connection", r.Entry.Layer.Size, time.Since(start), link.PerConn)
	}
	want, _ := os.ReadFile(file)
	got, _ := os.ReadFile(d.Path)
	if !bytes.Equal(want, got) {
		t.Fatal("the download through the link differs")
	}
}
