package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/sysext/sysext/internal/testenv"
	"github.com/sysext/sysext/oci"
	"github.com/sysext/sysext/oci/ocitest"
	"github.com/sysext/sysext/verify"
)

// signatureCount is how many signatures the cosign .sig tag of the
// platform's manifest at layout:tag holds.
func signatureCount(t *testing.T, layout, tag, platform string) int {
	t.Helper()
	ctx := context.Background()
	ref, err := oci.ParseReference("oci:" + layout + ":" + tag)
	if err != nil {
		t.Fatal(err)
	}
	tg, err := oci.Open(ctx, ref, oci.Options{})
	if err != nil {
		t.Fatal(err)
	}
	a, err := oci.Describe(ctx, tg, ref)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range a.Entries {
		if oci.PlatformString(e.Platform) != platform {
			continue
		}
		sig, err := tg.Resolve(ctx, verify.SignatureTag(e.Descriptor.Digest))
		if err != nil {
			return 0
		}
		b, err := oci.FetchManifest(ctx, tg, sig)
		if err != nil {
			t.Fatal(err)
		}
		var m ocispec.Manifest
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatal(err)
		}
		return len(m.Layers)
	}
	t.Fatalf("%s:%s has no %s manifest", layout, tag, platform)
	return 0
}

const cliRecipe = `name: greet
description: a test recipe for the command line
upstream: https://example.org/greet
version:
  pattern: '[0-9]+\.[0-9]+'
  example: "2.0"
arches:
  x86-64: {}
downloads:
  - id: greet
    url: https://example.org/greet/v${version}/greet-${uname}.tar.gz
    checksum:
      url: https://example.org/greet/v${version}/SHA256SUMS
files:
  - {from: "greet-${version}/greet", to: /usr/bin/}
units:
  - name: greet.service
    enable: true
    content: |
      [Service]
      ExecStart=/usr/bin/greet
`

func greetTarball(t *testing.T, body string) []byte {
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	tw := tar.NewWriter(zw)
	tw.WriteHeader(&tar.Header{Name: "greet-2.0/greet", Mode: 0o755, Size: int64(len(body)), Typeflag: tar.TypeReg})
	tw.Write([]byte(body))
	tw.Close()
	zw.Close()
	return b.Bytes()
}

func TestBakeCommand(t *testing.T) {
	testenv.RequireTool(t, "mksquashfs")
	t.Setenv("DOCKER_CONFIG", t.TempDir())
	tarball := greetTarball(t, "#!/bin/sh\necho greet 2.0\n")
	h := sha256.Sum256(tarball)
	files := map[string][]byte{
		"/example.org/greet/v2.0/greet-x86_64.tar.gz": tarball,
		"/example.org/greet/v2.0/SHA256SUMS":          []byte(hex.EncodeToString(h[:]) + "  greet-x86_64.tar.gz\n"),
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		data, ok := files[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Write(data)
	}))
	defer srv.Close()
	dir := t.TempDir()
	recipeFile := filepath.Join(dir, "greet.yaml")
	if err := os.WriteFile(recipeFile, []byte(cliRecipe), 0o644); err != nil {
		t.Fatal(err)
	}
	out := testenv.TempDirNoLeak(t, ".#")
	cache := filepath.Join(dir, "cache")

	// Usage errors exit 2 and name the fix.
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"bake", "no-such-recipe", "--version", "1"}, "sysext recipes list"},
		{[]string{"bake", recipeFile}, "needs --version"},
		{[]string{"bake", recipeFile, "--version", "2.0", "--arch", "arm64"}, "it offers x86-64"},
		{[]string{"bake", recipeFile, "--version", "2.0-beta"}, `does not match the recipe's pattern`},
		{[]string{"bake", recipeFile, "--version", "2.0", "--option", "x=y"}, "the recipe has no options"},
		{[]string{"bake", recipeFile, "--version", "2.0", "--sign"}, "--sign needs --push"},
		{[]string{"recipes", "show", "nope"}, "unknown recipe"},
	} {
		_, errs, code := runCLI(t, tc.args...)
		if code != exitUsage || !strings.Contains(errs, tc.want) {
			t.Errorf("%v: exit %d, %q; want 2 and %q", tc.args, code, errs, tc.want)
		}
	}

	// $SOURCE_DATE_EPOCH is read by one rule for build and bake (bake took
	// "12abc" for 12).
	t.Run("SOURCE_DATE_EPOCH", func(t *testing.T) {
		for _, v := range []string{"12abc", "-1", "1.5"} {
			t.Setenv("SOURCE_DATE_EPOCH", v)
			for _, args := range [][]string{
				{"bake", recipeFile, "--version", "2.0", "--mirror", srv.URL, "--cache", cache, "-o", out + "/"},
				{"build", dir, "--name", "greet", "--version", "2.0", "-o", out + "/"},
			} {
				if _, errs, code := runCLI(t, args...); code != exitUsage || !strings.Contains(errs, "SOURCE_DATE_EPOCH") {
					t.Errorf("%s with SOURCE_DATE_EPOCH=%s: exit %d, %s", args[0], v, code, errs)
				}
			}
		}
	})

	// A download that does not match: exit 1, nothing written.
	files["/example.org/greet/v2.0/greet-x86_64.tar.gz"] = greetTarball(t, "#!/bin/sh\necho tampered\n")
	_, errs, code := runCLI(t, "bake", recipeFile, "--version", "2.0", "--mirror", srv.URL, "--cache", cache, "-o", out+"/")
	if code != exitFailure || !strings.Contains(errs, "checksum mismatch") {
		t.Errorf("tampered download: exit %d, %q", code, errs)
	}
	if entries, _ := os.ReadDir(out); len(entries) != 0 {
		t.Errorf("a failed bake left %v", entries)
	}
	files["/example.org/greet/v2.0/greet-x86_64.tar.gz"] = tarball

	// Bake, push to an OCI layout and sign it in one step.
	priv, _, err := verify.GenerateKeyPair(nil)
	if err != nil {
		t.Fatal(err)
	}
	key := filepath.Join(dir, "cosign.key")
	os.WriteFile(key, priv, 0o600)
	t.Setenv("COSIGN_PASSWORD", "")
	layout := filepath.Join(dir, "layout")
	// An arm64 build signed already, by another key: --append keeps it and
	// its signature as they are (the bake signs what it pushed, as push
	// --sign does, and checks what it replaces the same way).
	otherPriv, _, err := verify.GenerateKeyPair(nil)
	if err != nil {
		t.Fatal(err)
	}
	otherKey := filepath.Join(dir, "other.key")
	os.WriteFile(otherKey, otherPriv, 0o600)
	arm := ocitest.Squashfs(t, ocitest.Meta("greet", "2.0", "arm64"), []byte("arm"))
	if _, errs, code := runCLI(t, "push", "-q", arm, "oci:"+layout+":2.0", "--sign", "--key", otherKey); code != 0 {
		t.Fatalf("push arm64: %s", errs)
	}
	for _, extra := range [][]string{nil, {"--sign", "--key", key}} {
		args := append([]string{"bake", recipeFile, "--version", "2.0", "--mirror", srv.URL, "--cache", cache, "-o", out + "/", "--force",
			"--push", "oci:" + layout + ":2.0", "--append"}, extra...)
		if _, errs, code := runCLI(t, args...); code != exitFailure || !strings.Contains(errs, "is signed") {
			t.Fatalf("bake --push --append %v onto an index signed by another key: exit %d: %s", extra, code, errs)
		}
	}
	stdout, errs, code := runCLI(t, "bake", recipeFile, "--version", "2.0", "--mirror", srv.URL, "--cache", cache, "-o", out+"/", "--json", "--force",
		"--push", "oci:"+layout+":2.0", "--append", "--allow-unsigned", "--sign", "--key", key)
	if code != 0 {
		t.Fatalf("bake: exit %d: %s", code, errs)
	}
	for arch, want := range map[string]int{"linux/arm64": 1, "linux/amd64": 1} {
		if got := signatureCount(t, layout, "2.0", arch); got != want {
			t.Errorf("%s has %d signatures after the bake, want %d", arch, got, want)
		}
	}
	var res struct {
		Path    string   `json:"path"`
		Upholds []string `json:"upholds"`
		Recipe  string   `json:"recipe"`
		Pushed  string   `json:"pushed"`
	}
	if err := json.Unmarshal([]byte(stdout), &res); err != nil {
		t.Fatalf("--json: %v\n%s", err, stdout)
	}
	if filepath.Base(res.Path) != "greet-2.0-x86-64.raw" || res.Recipe != "greet" || !strings.Contains(res.Pushed, "@sha256:") {
		t.Errorf("bake result %+v", res)
	}
	if len(res.Upholds) != 1 || res.Upholds[0] != "greet.service" {
		t.Errorf("upholds %v", res.Upholds)
	}

	// sysupdate over the baked image.
	stdout, errs, code = runCLI(t, "sysupdate", "greet", "--url", "https://example.org/ext/greet/", "--dir", out)
	if code != 0 || !strings.Contains(stdout, "listed greet-2.0-x86-64.raw") {
		t.Errorf("sysupdate: %d %s %s", code, stdout, errs)
	}
	if _, err := os.Stat(filepath.Join(out, "greet.conf")); err != nil {
		t.Error(err)
	}
	if _, errs, code = runCLI(t, "sysupdate", "greet"); code != exitUsage || !strings.Contains(errs, "--url") {
		t.Errorf("sysupdate without --url: %d %s", code, errs)
	}
}

func TestRecipesAndButaneCommands(t *testing.T) {
	stdout, errs, code := runCLI(t, "recipes", "list", "--json")
	if code != 0 {
		t.Fatalf("recipes list: %s", errs)
	}
	var list []struct {
		Name   string   `json:"name"`
		Arches []string `json:"architectures"`
	}
	if err := json.Unmarshal([]byte(stdout), &list); err != nil || len(list) < 17 {
		t.Fatalf("recipes list --json: %v, %d recipes", err, len(list))
	}
	stdout, _, code = runCLI(t, "recipes", "list")
	if code != 0 || !strings.Contains(stdout, "kubernetes") || !strings.Contains(stdout, "arm64,x86-64") {
		t.Errorf("recipes list:\n%s", stdout)
	}
	stdout, _, code = runCLI(t, "recipes", "show", "kubernetes")
	if code != 0 || !strings.Contains(stdout, "# option cni-version") || !strings.Contains(stdout, "name: kubernetes\n") {
		t.Errorf("recipes show:\n%s", stdout)
	}
	stdout, errs, code = runCLI(t, "butane", "ghcr.io/acme/ext/nebula:1.9")
	if code != 0 || !strings.Contains(stdout, "variant: flatcar") || !strings.Contains(stdout, "sysext pull ghcr.io/acme/ext/nebula:1.9 --name nebula") {
		t.Errorf("butane: %d %s\n%s", code, errs, stdout)
	}
	if _, errs, code = runCLI(t, "butane", "a/b:1", "--variant", "rhel"); code != exitUsage {
		t.Errorf("butane --variant rhel: %d %s", code, errs)
	}
}
