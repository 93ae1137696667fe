package oci_test

import (
	"bytes"
	"context"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sysext/sysext/delta"
	"github.com/sysext/sysext/ingest"
	"github.com/sysext/sysext/oci"
	"github.com/sysext/sysext/oci/ocitest"
)

// localWrites is an ingest that says when a byte outside the fetched
// ranges is written: a chunk taken from the stored image.
type localWrites struct {
	*ingest.Writer
	mu      sync.Mutex
	fetched []delta.Range
	local   chan struct{}
	once    sync.Once
}

func (w *localWrites) WriteAt(p []byte, off int64) (int, error) {
	w.mu.Lock()
	fetched := false
	for _, r := range w.fetched {
		if off >= r.Off && off < r.Off+r.Len {
			fetched = true
		}
	}
	w.mu.Unlock()
	if !fetched {
		w.once.Do(func() { close(w.local) })
	}
	return w.Writer.WriteAt(p, off)
}

// A delta download writes the chunks it finds in the stored image while
// the ranges are fetched, not once the fetched chunks before them have
// arrived: here the first range is held by the registry until a local
// chunk behind it is written (without that, the local chunks, read,
// checked and written in order, waited for it, and all of that work came
// after the link went quiet).
func TestDownloadDeltaWritesLocalChunksFirst(t *testing.T) {
	ctx := context.Background()
	r := rand.New(rand.NewPCG(7, 7))
	payload := make([]byte, 6<<20)
	for i := range payload {
		payload[i] = byte(r.Uint32())
	}
	old := ocitest.Squashfs(t, ocitest.Meta("hello", "1.0", "x86-64"), payload)
	changed := bytes.Clone(payload)
	for i := range 256 << 10 {
		changed[i] ^= 0xff
	}
	newImg := ocitest.Squashfs(t, ocitest.Meta("hello", "2.0", "x86-64"), changed)

	release := make(chan struct{})
	var held sync.Once
	holding := make(chan struct{})
	reg := ocitest.NewOlareg(t, func(w http.ResponseWriter, r *http.Request, next http.Handler) bool {
		if ocitest.Blobs(r) && strings.HasPrefix(r.Header.Get("Range"), "bytes=0-") {
			held.Do(func() { close(holding) })
			select {
			case <-release:
			case <-r.Context().Done():
				return true
			}
		}
		return false
	})
	tg, ref := reg.Open(t, "ext/hello:2.0")
	if _, err := oci.Push(ctx, tg, ref, []string{newImg}, oci.PushOptions{}); err != nil {
		t.Fatal(err)
	}
	res, err := oci.Resolve(ctx, tg, ref, "x86-64")
	if err != nil {
		t.Fatal(err)
	}
	ix, _, err := oci.ChunkIndexFile(ctx, newImg)
	if err != nil {
		t.Fatal(err)
	}
	oldIx, _, err := oci.ChunkIndexFile(ctx, old)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(old)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	iw, err := ingest.Open(ctx, filepath.Join(t.TempDir(), "ingest"), res.Layer.Size, res.Layer.Digest)
	if err != nil {
		t.Fatal(err)
	}
	defer iw.Close()
	w := &localWrites{Writer: iw, local: make(chan struct{})}

	// The first range is held until a local chunk is written (or 30 s).
	written := make(chan bool, 1)
	go func() {
		<-holding
		select {
		case <-w.local:
			written <- true
		case <-time.After(30 * time.Second):
			written <- false
		}
		close(release)
	}()
	d, err := oci.DownloadDelta(ctx, tg, &res.Entry, oci.DeltaOptions{
		Into:    w,
		Index:   ix,
		Sources: []oci.DeltaSource{{Name: old, File: f, Index: oldIx}},
		Planned: func(p *delta.Plan) error {
			if len(p.Ranges) == 0 || p.Ranges[0].Off != 0 || p.Reused == 0 {
				t.Fatalf("the plan does not fetch the start and take the rest: %+v", p.Ranges)
			}
			w.mu.Lock()
			w.fetched = p.Ranges
			w.mu.Unlock()
			return nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if !<-written {
		t.Fatal("no local chunk was written while the first range was held: the local chunks wait for the fetched ones before them")
	}
	want, err := os.ReadFile(newImg)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(iw.Name()); err != nil || !bytes.Equal(got, want) || d.Digest != res.Layer.Digest {
		t.Fatalf("the assembled image differs from the pushed one (%v)", err)
	}
}
