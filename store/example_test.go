package store_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/sysext/sysext/store"
	"github.com/sysext/sysext/verify/verifytest"
)

// An image gets into a node's store in three calls: Ingest (start, or
// resume, a download of a known layer), Commit (verify size and digest,
// fsync, link into the store) and Install (record it and switch the
// activation link). In a pull, oci.Download writes into the ingest; here
// the bytes are written by hand.
func ExampleStore_Ingest() {
	root, err := os.MkdirTemp("", "sysext-example-")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer os.RemoveAll(root)
	ctx := context.Background()
	s, err := store.Open(ctx, store.Options{Root: root})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer s.Close()

	image := []byte("the bytes of hello-1.0-x86-64.raw")
	layer := ocispec.Descriptor{MediaType: "application/vnd.sysext.image.squashfs", Digest: digest.FromBytes(image), Size: int64(len(image))}
	ing, err := s.Ingest(ctx, "hello", layer)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer ing.Close()
	if _, err := ing.WriteAt(image, ing.Offset()); err != nil { // oci.Download, resumed from Offset
		fmt.Println(err)
		return
	}
	file, err := ing.Commit(ctx, layer.Size, layer.Digest, "hello-1.0-x86-64.raw")
	if err != nil {
		fmt.Println(err)
		return
	}
	// The manifest's verification (verify.Policy.Verify in a pull).
	manifest := digest.FromString("the manifest that lists the layer")
	in := store.Install{Version: "1.0", Arch: "x86-64", File: file, Size: layer.Size, ManifestDigest: manifest, LayerDigest: layer.Digest}
	if err := s.Install(verifytest.AcceptUnsigned(manifest), "hello", in, store.Meta{Source: "ghcr.io/acme/hello:1"}); err != nil {
		fmt.Println(err)
		return
	}
	link, err := os.Readlink(filepath.Join(root, "var/lib/extensions/hello.raw"))
	if err != nil {
		fmt.Println(err)
		return
	}
	e, _ := s.Entry("hello")
	fmt.Println(file)
	fmt.Println(link)
	fmt.Println(e.Active.Version, e.Activation.Status) // pending: the node refreshes and proves it next (package activate)
	// Output:
	// hello-1.0-x86-64.raw
	// /var/lib/sysext/store/hello/hello-1.0-x86-64.raw
	// 1.0 pending
}
