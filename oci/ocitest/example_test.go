package ocitest_test

import (
	"context"
	"testing"

	"github.com/sysext/sysext/oci"
	"github.com/sysext/sysext/oci/ocitest"
)

// What a test writes: a registry, in-process or the real binary, optionally
// behind faults, and references into it. (Compiled, not run: the calls
// need a test's t; TestRegistries runs them.)
func Example() {
	_ = func(t *testing.T) {
		reg := ocitest.NewOlareg(t)                                               // in-process: referrers API, Range requests
		faulty := ocitest.NewOlareg(t, ocitest.FailStatus(500, 2, ocitest.Blobs)) // the first two blob GETs fail
		dist := ocitest.StartDistribution(t)                                      // the real `registry` binary
		ref := reg.Reference(t, "ext/docker:1")                                   // an oci.Reference (plain HTTP: loopback)
		tg, ref2 := faulty.Open(t, "ext/docker:1")                                // an oci.Target with test options
		_, _, _, _ = dist, ref, tg, ref2
	}
}

// The helpers the package documents: both registries answer, a fault fires
// the times it was asked to, and the client's retries get past it.
func TestRegistries(t *testing.T) {
	ctx := context.Background()
	var fired ocitest.Counter
	faulty := ocitest.NewOlareg(t, ocitest.FailStatus(500, 1, ocitest.Manifests, &fired))
	tg, ref := faulty.Open(t, "ext/hello:1")
	ocitest.PushRaw(t, tg, "1", []byte("layer"), "application/octet-stream", "", map[string]string{oci.AnnotationTitle: "hello.txt"}, nil)
	r, err := oci.Resolve(ctx, tg, ref, "")
	if err != nil {
		t.Fatalf("resolve past one injected 500: %v", err)
	}
	if fired.N() != 1 || r.FileName != "hello.txt" || !faulty.Referrers {
		t.Fatalf("fault fired %d times, entry %+v, referrers %v", fired.N(), r.Entry, faulty.Referrers)
	}
	dist := ocitest.StartDistribution(t)
	tg, ref = dist.Open(t, "ext/hello:1")
	ocitest.PushRaw(t, tg, "1", []byte("layer"), "application/octet-stream", "", nil, nil)
	if _, err := oci.Resolve(ctx, tg, ref, ""); err != nil || dist.Referrers || ref.String() != dist.Ref("ext/hello:1") {
		t.Fatalf("distribution: %v (referrers %v, ref %s)", err, dist.Referrers, ref)
	}
}
