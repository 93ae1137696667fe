package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/sysext/sysext/oci/ocitest"
)

// runCLI runs a command line in-process with run(), as main does, and
// returns stdout, stderr (with the "sysext: " line run() prints) and the
// exit code. Stdin is empty.
func runCLI(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	return runCLIStdin(t, "", args...)
}

// runCLIStdin is runCLI with stdin.
func runCLIStdin(t *testing.T, stdin string, args ...string) (string, string, int) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(context.Background(), args, strings.NewReader(stdin), &out, &errb)
	return out.String(), errb.String(), code
}

// writeFile writes s to p, creating its directories.
func writeFile(t *testing.T, p, s string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

// pushLayered pushes a linux/amd64 image with the given config and layers
// (name -> body; a name ending in / is a directory) and returns its reference.
func pushLayered(t *testing.T, reg *ocitest.Registry, repoTag string, config ocispec.ImageConfig, layers ...[][2]string) string {
	t.Helper()
	var ls []ocitest.Layer
	for _, l := range layers {
		ls = append(ls, ocitest.TarGzLayer(t, time.Time{}, l...))
	}
	return ocitest.PushImage(t, reg, repoTag, ocispec.Image{Platform: ocispec.Platform{OS: "linux", Architecture: "amd64"}, Config: config}, ls...)
}
