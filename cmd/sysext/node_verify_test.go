package main

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sysext/sysext/extension"
	"github.com/sysext/sysext/internal/testenv"
	"github.com/sysext/sysext/oci/ocitest"
	"github.com/sysext/sysext/verify/verifytest"
)

// nodeTestRoot makes a node root (a temp dir with a Debian 12 os-release).
func nodeTestRoot(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	writeFile(t, filepath.Join(root, "etc/os-release"), "ID=debian\nVERSION_ID=12\n")
	return root
}

// pushTwoArch pushes name:1.0 for the host and one other architecture, so
// ref names an index.
func pushTwoArch(t *testing.T, reg *ocitest.Registry, repoTag, name string) {
	t.Helper()
	other := extension.Arch("arm64")
	if extension.HostArch() == other {
		other = "x86-64"
	}
	host := ocitest.Squashfs(t, ocitest.Meta(name, "1.0", extension.HostArch()), []byte(name+" host"))
	foreign := ocitest.Squashfs(t, ocitest.Meta(name, "1.0", other), []byte(name+" other"))
	if _, errs, code := runCLI(t, "push", "-q", host, foreign, reg.Ref(repoTag)); code != 0 {
		t.Fatalf("push: %s", errs)
	}
}

// assertNothingInstalled fails when root holds an activation link or a
// stored image.
func assertNothingInstalled(t *testing.T, root string) {
	t.Helper()
	for _, d := range []string{"var/lib/extensions", "var/lib/sysext/store"} {
		filepath.Walk(filepath.Join(root, d), func(p string, fi os.FileInfo, err error) error {
			if err == nil && !fi.IsDir() && !strings.HasSuffix(p, ".lock") && filepath.Base(p) != "state.json" {
				t.Errorf("a refused pull left %s", p)
			}
			return nil
		})
	}
}

// TestPullCosignSignedIndex: the real cosign v2 signs only the index (no
// --recursive); pull accepts the per-architecture manifest through it. A
// manifest signed by nobody under an index signed by another key is refused.
func TestPullCosignSignedIndex(t *testing.T) {
	t.Setenv("DOCKER_CONFIG", t.TempDir())
	bin := testenv.RequireTool(t, "cosign")
	home := t.TempDir()
	cosign := func(args ...string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, bin, args...)
		cmd.Env = append(os.Environ(), "HOME="+home, "TUF_ROOT="+filepath.Join(home, "tuf"), "COSIGN_PASSWORD=pw", "COSIGN_YES=true")
		cmd.Dir = home
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("cosign %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	cosign("generate-key-pair", "--output-key-prefix", "signer")
	cosign("generate-key-pair", "--output-key-prefix", "other")
	pub := filepath.Join(home, "signer.pub")

	reg := ocitest.NewOlareg(t)
	signIndex := func(repoTag, key string) {
		tg, r := reg.Open(t, repoTag)
		desc, err := tg.Resolve(context.Background(), r.Reference())
		if err != nil {
			t.Fatal(err)
		}
		if desc.MediaType != "application/vnd.oci.image.index.v1+json" {
			t.Fatalf("%s is a %s, want an index", repoTag, desc.MediaType)
		}
		repo, _, _ := strings.Cut(repoTag, ":")
		cosign("sign", "--key", filepath.Join(home, key), "--tlog-upload=false", "--allow-http-registry", "--allow-insecure-registry", reg.Ref(repo+"@"+desc.Digest.String()))
	}
	pushTwoArch(t, reg, "ext/idxhello:1.0", "idxhello")
	signIndex("ext/idxhello:1.0", "signer.key")
	pushTwoArch(t, reg, "ext/idxother:1.0", "idxother")
	signIndex("ext/idxother:1.0", "other.key")

	// Only the index signed by another key: refused, nothing installed.
	root := nodeTestRoot(t)
	_, errs, code := runCLI(t, "pull", reg.Ref("ext/idxother:1.0"), "--root", root, "--key", pub)
	if code != exitFailure || !strings.Contains(errs, "nor does its index") {
		t.Fatalf("pull under an index signed by another key: %d %s", code, errs)
	}
	assertNothingInstalled(t, root)

	out, errs, code := runCLI(t, "pull", reg.Ref("ext/idxhello:1.0"), "--root", root, "--key", pub, "--json")
	var r struct{ Name, Action, Signer, Digest string }
	if code != 0 || json.Unmarshal([]byte(out), &r) != nil || r.Action != "pulled" || !strings.HasPrefix(r.Signer, "key:") {
		t.Fatalf("pull of a manifest under a cosign-signed index: %d %q %s", code, out, errs)
	}
	// The store recorded the manifest (not the index) as installed.
	out, errs, code = runCLI(t, "list", "--root", root, "--json")
	if code != 0 || !strings.Contains(out, r.Digest) || !strings.Contains(out, "idxhello") {
		t.Fatalf("list: %d %s %s", code, out, errs)
	}
}

// TestPullKeyless: pull takes the keyless flags; another identity is
// refused with nothing installed.
func TestPullKeyless(t *testing.T) {
	t.Setenv("DOCKER_CONFIG", t.TempDir())
	ss := verifytest.New(t)
	reg := ocitest.NewOlareg(t)
	img := ocitest.Squashfs(t, ocitest.Meta("klhello", "1.0", extension.HostArch()), []byte("keyless"))
	if _, errs, code := runCLI(t, "push", "-q", img, reg.Ref("ext/klhello:1.0")); code != 0 {
		t.Fatalf("push: %s", errs)
	}
	tg, ref := reg.Open(t, "ext/klhello:1.0")
	desc, err := tg.Resolve(context.Background(), ref.Reference())
	if err != nil {
		t.Fatal(err)
	}
	ss.Attach(t, tg, desc, "ci@example.com", "https://issuer.example")

	root := nodeTestRoot(t)
	keyless := []string{"pull", reg.Ref("ext/klhello:1.0"), "--root", root, "--trusted-root", ss.TrustedRoot, "--certificate-oidc-issuer", "https://issuer.example"}
	_, errs, code := runCLI(t, append(keyless, "--certificate-identity", "mallory@example.com")...)
	if code != exitFailure || !strings.Contains(errs, "mallory@example.com") {
		t.Fatalf("pull, other identity: %d %s", code, errs)
	}
	assertNothingInstalled(t, root)
	out, errs, code := runCLI(t, append(keyless, "--certificate-identity", "ci@example.com")...)
	if code != 0 || !strings.Contains(out, "signed by") || !strings.Contains(out, "ci@example.com") {
		t.Fatalf("keyless pull: %d %s %s", code, out, errs)
	}
	// update checks the identity recorded at pull time, without the flags:
	// an unsigned 2.0 is refused, a signed one installed.
	img2 := ocitest.Squashfs(t, ocitest.Meta("klhello", "2.0", extension.HostArch()), []byte("keyless 2"))
	if _, errs, code := runCLI(t, "push", "-q", img2, reg.Ref("ext/klhello:1.0")); code != 0 {
		t.Fatalf("push: %s", errs)
	}
	if _, errs, code := runCLI(t, "update", "--all", "--root", root); code != exitFailure {
		t.Fatalf("update to an unsigned build after a keyless pull: %d %s", code, errs)
	}
	desc, err = tg.Resolve(context.Background(), ref.Reference())
	if err != nil {
		t.Fatal(err)
	}
	ss.Attach(t, tg, desc, "ci@example.com", "https://issuer.example")
	if out, errs, code := runCLI(t, "update", "--all", "--root", root); code != 0 || !strings.Contains(out, "2.0") {
		t.Fatalf("update to a keyless-signed build: %d %s %s", code, out, errs)
	}
}
