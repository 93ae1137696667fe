package oci_test

import (
	"context"
	"fmt"
	"os"

	"github.com/sysext/sysext/extension"
	"github.com/sysext/sysext/oci"
)

// A reference names a registry repository or an OCI image layout
// directory (oci:DIR), with a tag, a digest or both.
func ExampleParseReference() {
	for _, s := range []string{
		"ghcr.io/acme/ext/docker:24",
		"oci:/srv/images:docker-24",
		"localhost:5000/ext/docker@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
	} {
		ref, err := oci.ParseReference(s)
		if err != nil {
			fmt.Println(err)
			continue
		}
		fmt.Printf("scope %s, tag %q, layout %v, plain HTTP %v\n", ref.Scope(), ref.Tag, ref.IsLayout(), ref.IsLoopback())
	}
	// Output:
	// scope ghcr.io/acme/ext/docker, tag "24", layout false, plain HTTP false
	// scope oci:/srv/images, tag "docker-24", layout true, plain HTTP false
	// scope localhost:5000/ext/docker, tag "", layout false, plain HTTP true
}

// The pieces in the order a node uses them: open the registry (or layout),
// resolve the reference to this host's manifest from manifests only, check
// what it says, then download the one layer. (Not run: it needs a
// registry; the package's tests run it against real ones.)
func Example() {
	ctx := context.Background()
	ref, err := oci.ParseReference("ghcr.io/acme/ext/docker:24")
	if err != nil {
		fmt.Println(err)
		return
	}
	t, err := oci.Open(ctx, ref, oci.Options{})
	if err != nil {
		fmt.Println(err)
		return
	}
	r, err := oci.Resolve(ctx, t, ref, extension.HostArch()) // an index's entry for this host
	if err != nil {
		fmt.Println(err)
		return
	}
	// Here: verify the signatures on r.Descriptor.Digest (package verify)
	// and check r.Metadata against the host's os-release (extension.Compatible).
	d, err := oci.Download(ctx, t, &r.Entry, oci.DownloadOptions{Dir: os.TempDir()})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(d.Path, d.Digest)
	// A node downloads into the store's ingest instead:
	// oci.DownloadOptions{Into: ing}, an oci.Writer.
}
