package node

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/sysext/sysext/extension"
	"github.com/sysext/sysext/internal/testenv"
	"github.com/sysext/sysext/oci"
	"github.com/sysext/sysext/oci/ocitest"
	"github.com/sysext/sysext/verify"
	"github.com/sysext/sysext/verify/verifytest"
)

// makeImage builds a squashfs extension NAME VERSION with a program
// /usr/bin/NAME-hello printing "NAME VERSION", and pad bytes of random
// (incompressible) payload.
func makeImage(t testing.TB, m extension.Metadata, pad int) string {
	t.Helper()
	mk := testenv.RequireTool(t, "mksquashfs")
	tmp := t.TempDir()
	root := filepath.Join(tmp, "root")
	rel := filepath.Join(root, extension.ReleasePath(m.Name))
	must(t, os.MkdirAll(filepath.Dir(rel), 0o755))
	must(t, os.WriteFile(rel, m.Release().Format(), 0o644))
	must(t, os.MkdirAll(filepath.Join(root, "usr/bin"), 0o755))
	must(t, os.WriteFile(filepath.Join(root, "usr/bin", m.Name+"-hello"), []byte("#!/bin/sh\necho "+m.Name+" "+m.Version+"\n"), 0o755))
	if pad > 0 {
		b := make([]byte, pad)
		rand.Read(b)
		must(t, os.MkdirAll(filepath.Join(root, "usr/share", m.Name), 0o755))
		must(t, os.WriteFile(filepath.Join(root, "usr/share", m.Name, "pad"), b, 0o644))
	}
	arch := m.Arch
	if arch == "" {
		arch = extension.AnyArch
	}
	out := filepath.Join(tmp, extension.FileName(m.Name, m.Version, arch))
	cmd := exec.Command(mk, root, out, "-all-root", "-noappend", "-no-progress", "-quiet", "-comp", "lz4", "-noI", "-noD", "-noF", "-noX")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("mksquashfs: %v\n%s", err, b)
	}
	return out
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func meta(name, version string) extension.Metadata {
	return extension.Metadata{Name: name, Version: version, Arch: extension.HostArch(), ID: extension.AnyID}
}

// push pushes files to ref (host/repo:tag or oci:DIR:tag).
func push(t testing.TB, ref string, files ...string) *oci.PushResult {
	t.Helper()
	return pushWith(t, ref, oci.PushOptions{}, files...)
}

// pushWith is push with options.
func pushWith(t testing.TB, ref string, o oci.PushOptions, files ...string) *oci.PushResult {
	t.Helper()
	r, err := oci.ParseReference(ref)
	must(t, err)
	to := ocitest.TestOptions()
	to.CreateLayout = true
	tg, err := oci.Open(context.Background(), r, to)
	must(t, err)
	res, err := oci.Push(context.Background(), tg, r, files, o)
	must(t, err)
	return res
}

// storedFiles lists the image files in a store directory, leaving out
// the chunk indexes kept next to them.
func storedFiles(t testing.TB, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".chunks") {
			out = append(out, e.Name())
		}
	}
	return out
}

// chunkIndexBlobSize is the size of the chunk index blob a push attached
// to its first manifest (from the referrer's annotation).
func chunkIndexBlobSize(t testing.TB, r *oci.PushResult) int64 {
	t.Helper()
	var dg string
	var n int64
	if _, err := fmt.Sscanf(r.Manifests[0].ChunkIndex.Annotations[oci.AnnotationChunkIndexBlob], "%s %d", &dg, &n); err != nil {
		t.Fatalf("chunk index annotation: %v", err)
	}
	return n
}

// nodeRoot makes a node root with an os-release.
func nodeRoot(t testing.TB, osRelease string) string {
	t.Helper()
	root := testenv.TempDirNoLeak(t, ".#")
	must(t, os.MkdirAll(filepath.Join(root, "etc"), 0o755))
	must(t, os.WriteFile(filepath.Join(root, "etc/os-release"), []byte(osRelease), 0o644))
	return root
}

const debianRelease = "ID=debian\nVERSION_ID=12\n"

// unsigned accepts anything, as --insecure-allow-unsigned does.
type unsigned struct{}

func (unsigned) Verify(_ context.Context, _ oci.Target, _ oci.Reference, r *oci.Resolved, _ Trust) (verify.Verified, error) {
	return verifytest.AcceptUnsigned(r.Descriptor.Digest), nil
}

// recRefresher records refreshes; it fails once with fail when set.
type recRefresher struct {
	n    atomic.Int32
	fail error
}

func (r *recRefresher) Refresh(context.Context) error {
	r.n.Add(1)
	err := r.fail
	r.fail = nil
	return err
}

func testNode(root string) *Node {
	return New(Options{
		Store:    storeOpts(root),
		OCI:      ocitest.TestOptions(),
		Verifier: unsigned{},
	})
}

// requestCounter counts registry requests by kind.
type requestCounter struct {
	all, manifests, blobs atomic.Int64
}

func (c *requestCounter) fault() ocitest.Fault {
	return func(w http.ResponseWriter, r *http.Request, next http.Handler) bool {
		c.all.Add(1)
		switch {
		case ocitest.Manifests(r):
			c.manifests.Add(1)
		case ocitest.Blobs(r):
			c.blobs.Add(1)
		}
		return false
	}
}

func (c *requestCounter) reset() { c.all.Store(0); c.manifests.Store(0); c.blobs.Store(0) }

func fileContains(t testing.TB, p, s string) bool {
	b, err := os.ReadFile(p)
	return err == nil && bytes.Contains(b, []byte(s))
}

// publishedHello pushes hello 1.0 to an in-process registry under
// ext/hello:TAG and makes a Debian node root; it returns the reference and
// the root.
func publishedHello(t testing.TB, tag string) (ref, root string) {
	t.Helper()
	reg := ocitest.NewOlareg(t)
	ref = reg.Ref("ext/hello:" + tag)
	push(t, ref, makeImage(t, meta("hello", "1.0"), 0))
	return ref, nodeRoot(t, debianRelease)
}
