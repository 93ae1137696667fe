package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/sysext/sysext/oci/ocitest"
)

// runCLI runs a command line in-process, as run() would, and returns
// stdout, stderr (with the "sysext: " line run() prints) and the exit code.
// Stdin is empty.
func runCLI(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	root := newRootCommand()
	var out, errb bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errb)
	root.SetIn(strings.NewReader(""))
	root.SetArgs(args)
	err := root.ExecuteContext(context.Background())
	if err == nil {
		return out.String(), errb.String(), exitOK
	}
	errb.WriteString("sysext: " + err.Error() + "\n")
	code := exitFailure
	var ee *exitError
	if errors.As(err, &ee) {
		code = ee.code
	} else if isCobraUsage(err) {
		code = exitUsage
	}
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
