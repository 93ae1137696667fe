package main

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/sysext/sysext/extension"
	"github.com/sysext/sysext/oci"
	"github.com/sysext/sysext/oci/ocitest"
)

// TestHugeIndexCommands: the report's 20 000-entry, 3 MB index, at a
// registry (manifest requests counted at its handler) and in an OCI
// layout: pull, fetch and inspect refuse it at once, reading nothing of
// what it lists, before any signature check.
func TestHugeIndexCommands(t *testing.T) {
	t.Setenv("DOCKER_CONFIG", t.TempDir())
	var manifests atomic.Int64
	reg := ocitest.NewOlareg(t, func(w http.ResponseWriter, r *http.Request, next http.Handler) bool {
		if ocitest.Manifests(r) {
			manifests.Add(1)
		}
		return false
	})
	tg, ref := reg.Open(t, "ext/huge:1")
	ocitest.HugeIndex(t, tg, "1", 20000)

	layout := ocitest.NewLayout(t, "1")
	if _, errs, code := runCLI(t, "push", "-q", ocitest.Squashfs(t, ocitest.Meta("seed", "1", "x86-64"), nil), layout.String()); code != 0 {
		t.Fatalf("push: %s", errs) // makes the layout
	}
	lt, err := oci.Open(context.Background(), layout, oci.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ocitest.HugeIndex(t, lt, "1", 20000)

	root := nodeTestRoot(t)
	key := writeTestKey(t)
	for _, r := range []string{ref.String(), layout.String()} {
		for _, args := range [][]string{
			{"pull", r, "--root", root, "--key", key},
			{"fetch", r, "-o", t.TempDir(), "--insecure-allow-unsigned"},
			{"inspect", r},
		} {
			manifests.Store(0)
			_, errs, code := runCLI(t, args...)
			if code == 0 || !strings.Contains(errs, "an extension artifact's index may have") {
				t.Errorf("%s: exit %d: %s", strings.Join(args, " "), code, errs)
			}
			if n := manifests.Load(); n > 1 {
				t.Errorf("%s: %d manifest requests, want 1 (resolving the tag)", strings.Join(args, " "), n)
			}
		}
	}
}

// writeTestKey makes a key pair with generate-key-pair and returns the
// public key's path.
func writeTestKey(t *testing.T) string {
	t.Helper()
	t.Setenv("COSIGN_PASSWORD", "pw")
	prefix := t.TempDir() + "/test"
	if _, errs, code := runCLI(t, "generate-key-pair", "--output-key-prefix", prefix); code != 0 {
		t.Fatalf("generate-key-pair: %s", errs)
	}
	return prefix + ".pub"
}

// TestUnsignedIndexFanOut: an index under the caps that lists 40 manifests
// without platform before the host's build: pull checks the index's own
// signature before reading more than a few of them, and refuses.
func TestUnsignedIndexFanOut(t *testing.T) {
	t.Setenv("DOCKER_CONFIG", t.TempDir())
	var manifests atomic.Int64
	reg := ocitest.NewOlareg(t, func(w http.ResponseWriter, r *http.Request, next http.Handler) bool {
		if ocitest.Manifests(r) {
			manifests.Add(1)
		}
		return false
	})
	tg, ref := reg.Open(t, "ext/fan:1")
	var entries []ocispec.Descriptor
	for i := range 40 {
		entries = append(entries, ocitest.SysextManifest(t, tg, ocitest.OtherArch(), fmt.Sprintf("1.%d", i)))
	}
	ocitest.Index(t, tg, "1", append(entries, ocitest.SysextManifest(t, tg, extension.HostArch(), "2.0")))
	manifests.Store(0)
	_, errs, code := runCLI(t, "pull", ref.String(), "--root", nodeTestRoot(t), "--key", writeTestKey(t))
	if code == 0 || !strings.Contains(errs, "its own signature does not verify") {
		t.Errorf("pull through an unsigned index of 41 candidates: exit %d: %s", code, errs)
	}
	t.Logf("%d manifest requests: %s", manifests.Load(), errs)
	// The tag, the index, 4 candidates, and the index's signature lookup;
	// and the first candidate's signature lookup (the cosign tag and the
	// bundle referrers' tag) and its chunk index lookup (the referrers'
	// fallback tag; the index is kept next to an image downloaded whole),
	// started beside its read: one each, however many the index lists.
	if n := manifests.Load(); n > 13 {
		t.Errorf("pull made %d manifest requests before refusing", n)
	}
}
