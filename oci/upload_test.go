package oci_test

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sysext/sysext/internal/testenv"
	"github.com/sysext/sysext/oci"
	"github.com/sysext/sysext/oci/ocitest"
)

// uploads counts the blob upload requests a registry was sent, by method,
// and the bytes of PATCH bodies it read.
type uploads struct {
	mu      sync.Mutex
	methods map[string]int
	patched atomic.Int64
}

func (u *uploads) fault() ocitest.Fault {
	u.methods = map[string]int{}
	return func(w http.ResponseWriter, r *http.Request, next http.Handler) bool {
		if !strings.Contains(r.URL.Path, "/blobs/uploads/") {
			return false
		}
		u.mu.Lock()
		u.methods[r.Method]++
		u.mu.Unlock()
		if r.Method == http.MethodPatch {
			r.Body = countingBody{r.Body, &u.patched}
		}
		return false
	}
}

func (u *uploads) n(method string) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.methods[method]
}

type countingBody struct {
	io.ReadCloser
	n *atomic.Int64
}

func (c countingBody) Read(p []byte) (int, error) {
	n, err := c.ReadCloser.Read(p)
	c.n.Add(int64(n))
	return n, err
}

func randomImage(t *testing.T, name string, size int) string {
	t.Helper()
	payload := make([]byte, size)
	rand.Read(payload)
	return ocitest.Squashfs(t, ocitest.Meta(name, "1", "x86-64"), payload)
}

func fileDigest(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}

// The layer goes up as an upload session (POST, one PATCH with the whole
// file, an empty PUT with the digest) to the distribution registry (an
// absolute Location, through a counting proxy) and to olareg (relative),
// and the real oras CLI pulls back the same bytes.
func TestPushStreamsLayer(t *testing.T) {
	testenv.RequireTool(t, "oras")
	for _, name := range []string{"distribution", "olareg"} {
		t.Run(name, func(t *testing.T) {
			var up uploads
			var reg *ocitest.Registry
			if name == "distribution" {
				reg, _ = ocitest.Front(t, ocitest.StartDistribution(t), up.fault())
			} else {
				reg = ocitest.NewOlareg(t, up.fault())
			}
			file := randomImage(t, "stream", 3<<20)
			tg, ref := reg.Open(t, "ext/stream:1")
			var last atomic.Int64
			opts := oci.PushOptions{Progress: func(_ string, done, _ int64) { last.Store(done) }}
			if _, err := oci.Push(context.Background(), tg, ref, []string{file}, opts); err != nil {
				t.Fatal(err)
			}
			fi, _ := os.Stat(file)
			if up.n("PATCH") != 1 || up.patched.Load() != fi.Size() {
				t.Errorf("%d PATCH requests with %d bytes, want 1 with the whole file (%d bytes)", up.n("PATCH"), up.patched.Load(), fi.Size())
			}
			if last.Load() != fi.Size() {
				t.Errorf("progress ended at %d of %d", last.Load(), fi.Size())
			}
			out := t.TempDir()
			runTool(t, out, "oras", "pull", "--plain-http", ref.String(), "-o", out)
			sameFile(t, file, filepath.Join(out, "stream-1-x86-64.raw"))
		})
	}
}

// A layer the registry already has is not sent whole again: once the
// digest shows it is there, the PATCH stops and its session is deleted.
func TestPushStreamStopsForExistingBlob(t *testing.T) {
	file := randomImage(t, "again", 32<<20)
	layer := fileDigest(t, file)
	var up uploads
	// On the second push the registry reads no PATCH body until the push
	// has ended the session (DELETE): a push that learns from its HEAD
	// that the layer is there stops the PATCH and deletes the session,
	// so the registry then finds at most what the sockets held. Released
	// when the HEAD came (as before) the count depended on how fast the
	// push noticed: 25 of 32 MiB on a loaded machine. A push that never
	// gives up is read after 10 s, and fails the count below.
	var gate, headed atomic.Bool
	deleted := make(chan struct{})
	var once sync.Once
	hold := func(w http.ResponseWriter, r *http.Request, next http.Handler) bool {
		if r.Method == http.MethodHead && strings.HasSuffix(r.URL.Path, "/blobs/"+layer) && gate.Load() {
			headed.Store(true)
		}
		if r.Method == http.MethodDelete && strings.Contains(r.URL.Path, "/blobs/uploads/") {
			once.Do(func() { close(deleted) })
		}
		if gate.Load() && r.Method == http.MethodPatch {
			select {
			case <-deleted:
			case <-time.After(10 * time.Second):
			}
		}
		return false
	}
	reg := ocitest.NewOlareg(t, up.fault(), hold)
	tg, ref := reg.Open(t, "ext/again:1")
	if _, err := oci.Push(context.Background(), tg, ref, []string{file}, oci.PushOptions{}); err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(file)
	if up.patched.Load() != fi.Size() {
		t.Fatalf("first push sent %d of %d bytes", up.patched.Load(), fi.Size())
	}
	up.mu.Lock()
	up.methods = map[string]int{}
	up.mu.Unlock()
	up.patched.Store(0)
	gate.Store(true)
	tg, ref = reg.Open(t, "ext/again:2")
	if _, err := oci.Push(context.Background(), tg, ref, []string{file}, oci.PushOptions{}); err != nil {
		t.Fatal(err)
	}
	if !headed.Load() {
		t.Error("the second push never asked whether the layer is there (HEAD)")
	}
	if got := up.patched.Load(); got >= fi.Size()/2 {
		t.Errorf("second push of a present layer: the registry read %d of %d bytes", got, fi.Size())
	}
	if up.n("DELETE") != 1 || up.n("PUT") != 0 {
		t.Errorf("second push's upload requests %v: want its session deleted, no PUT", up.methods)
	}
	r, err := oci.Resolve(context.Background(), tg, ref, "x86-64")
	if err != nil {
		t.Fatal(err)
	}
	d, err := oci.Download(context.Background(), tg, &r.Entry, oci.DownloadOptions{Dir: testenv.TempDirNoLeak(t, ".#")})
	if err != nil {
		t.Fatal(err)
	}
	sameFile(t, file, d.Path)
}

// A registry that cuts the PATCH mid-way: the push fails with an error
// naming the upload, deletes the session, and a second push succeeds.
func TestPushStreamCutMidway(t *testing.T) {
	testenv.RequireTool(t, "oras")
	var up uploads
	var cuts atomic.Int64
	cut := func(w http.ResponseWriter, r *http.Request, next http.Handler) bool {
		if r.Method != http.MethodPatch || cuts.Add(1) > 1 {
			return false
		}
		io.CopyN(io.Discard, r.Body, 1<<20)
		panic(http.ErrAbortHandler) // drops the connection
	}
	dist := ocitest.StartDistribution(t)
	reg, _ := ocitest.Front(t, dist, up.fault(), cut)
	file := randomImage(t, "cut", 8<<20)
	tg, ref := reg.Open(t, "ext/cut:1")
	_, err := oci.Push(context.Background(), tg, ref, []string{file}, oci.PushOptions{})
	if err == nil || !strings.Contains(err.Error(), "upload sha256:") || !strings.Contains(err.Error(), "send the blob") {
		t.Fatalf("push through a cut PATCH: %v", err)
	}
	t.Log(err)
	if up.n("DELETE") != 1 {
		t.Errorf("upload requests %v: want the cut session deleted", up.methods)
	}
	if _, err := oci.Push(context.Background(), tg, ref, []string{file}, oci.PushOptions{}); err != nil {
		t.Fatalf("second push: %v", err)
	}
	out := t.TempDir()
	runTool(t, out, "oras", "pull", "--plain-http", ref.String(), "-o", out)
	sameFile(t, file, filepath.Join(out, "cut-1-x86-64.raw"))
}
