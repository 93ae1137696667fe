// Package ocitest starts real registries for tests: the distribution
// `registry` binary on a free loopback port (end-to-end, no referrers API,
// disk-backed) and olareg in-process behind httptest (fast, referrers API,
// Range requests), optionally behind a fault-injecting handler. Every
// server is stopped when the test ends.
//
//	reg := ocitest.NewOlareg(t)                       // in-process
//	reg := ocitest.StartDistribution(t)               // the real binary
//	reg := ocitest.NewOlareg(t, ocitest.FailStatus(500, 2, ocitest.Blobs))
//	ref := reg.Reference(t, "ext/docker:1")           // an oci.Reference
//
// Loopback hosts make oci.Open use plain HTTP automatically.
package ocitest
