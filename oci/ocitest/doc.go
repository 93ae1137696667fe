// Package ocitest starts real registries for tests: the distribution
// `registry` binary on a free loopback port (end-to-end, no referrers API,
// disk-backed) and olareg in-process behind httptest (fast, referrers API,
// Range requests), optionally behind a fault-injecting handler. Every
// server is stopped when the test ends. Example shows what a test writes.
//
// Loopback hosts make oci.Open use plain HTTP automatically.
package ocitest
