package verify_test

import (
	"bytes"
	"context"
	"crypto"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2"
	"oras.land/oras-go/v2/content"

	"github.com/sysext/sysext/internal/testenv"
	"github.com/sysext/sysext/oci"
	"github.com/sysext/sysext/oci/ocitest"
	"github.com/sysext/sysext/verify"
	"github.com/sysext/sysext/verify/verifytest"
)

// The real cosign v2 (`cosign`) and v3 (`cosign3`) against a real registry:
// olareg (referrers API) and the distribution registry (fallback tag).

const password = "interop-pw"

type cosignEnv struct {
	t     *testing.T
	home  string
	v2    string
	v3    string
	flags []string // registry flags for loopback HTTP
}

func newCosignEnv(t *testing.T) *cosignEnv {
	return &cosignEnv{
		t:     t,
		home:  t.TempDir(), // cosign's caches go here, never the host's HOME
		v2:    testenv.RequireTool(t, "cosign"),
		v3:    testenv.RequireTool(t, "cosign3"),
		flags: []string{"--allow-http-registry", "--allow-insecure-registry"},
	}
}

// run runs a cosign binary offline and returns its combined output.
func (e *cosignEnv) run(bin string, args ...string) (string, error) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(os.Environ(), "HOME="+e.home, "TUF_ROOT="+filepath.Join(e.home, "tuf"), "COSIGN_PASSWORD="+password, "COSIGN_YES=true")
	cmd.Dir = e.home
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func (e *cosignEnv) must(bin string, args ...string) string {
	e.t.Helper()
	out, err := e.run(bin, args...)
	if err != nil {
		e.t.Fatalf("%s %s: %v\n%s", filepath.Base(bin), strings.Join(args, " "), err, out)
	}
	return out
}

// pushArtifact stores a small artifact manifest and returns its descriptor.
func pushArtifact(t *testing.T, tg oci.Target, body string) ocispec.Descriptor {
	t.Helper()
	ctx := context.Background()
	b := []byte(body)
	layer := content.NewDescriptorFromBytes("application/vnd.sysext.image.squashfs", b)
	if err := tg.Push(ctx, layer, bytes.NewReader(b)); err != nil {
		t.Fatal(err)
	}
	d, err := oras.PackManifest(ctx, tg, oras.PackManifestVersion1_1, "application/vnd.sysext.image.v1", oras.PackManifestOptions{Layers: []ocispec.Descriptor{layer}})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestCosignInterop(t *testing.T) {
	env := newCosignEnv(t)
	ctx := context.Background()

	// Keys: one pair made by cosign, one by us; each is used by the other.
	env.must(env.v2, "generate-key-pair", "--output-key-prefix", "cosign")
	cosignPriv := filepath.Join(env.home, "cosign.key")
	cosignPub := filepath.Join(env.home, "cosign.pub")
	ourPrivPEM, ourPubPEM, err := verify.GenerateKeyPair([]byte(password))
	if err != nil {
		t.Fatal(err)
	}
	ourPriv := filepath.Join(env.home, "ours.key")
	ourPub := filepath.Join(env.home, "ours.pub")
	if err := os.WriteFile(ourPriv, ourPrivPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(ourPub, ourPubPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	loadPub := func(p string) *verify.Requirement {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		k, err := verify.LoadPublicKey(b)
		if err != nil {
			t.Fatal(err)
		}
		return &verify.Requirement{Keys: []crypto.PublicKey{k}}
	}
	b, _ := os.ReadFile(cosignPriv)
	signerFromCosignKey, err := verify.LoadPrivateKey(b, []byte(password))
	if err != nil {
		t.Fatalf("cosign's key file: %v", err)
	}

	registries := map[string]func(testing.TB) *ocitest.Registry{
		"olareg":       func(t testing.TB) *ocitest.Registry { return ocitest.NewOlareg(t) },
		"distribution": ocitest.StartDistribution,
	}
	for name, start := range registries {
		t.Run(name, func(t *testing.T) {
			reg := start(t)
			tg, ref := reg.Open(t, "interop/ext:1")
			repo := ref.Scope()
			at := func(d ocispec.Descriptor) string { return repo + "@" + d.Digest.String() }

			t.Run("cosign verifies ours", func(t *testing.T) {
				img := pushArtifact(t, tg, "ours "+name)
				// Signed with our key file, and with cosign's key file read by us.
				for _, s := range []*verify.Signer{mustLoad(t, ourPriv), signerFromCosignKey} {
					if _, err := verify.Sign(ctx, tg, img, repo, s); err != nil {
						t.Fatal(err)
					}
				}
				for _, pub := range []string{ourPub, cosignPub} {
					for _, bin := range []string{env.v2, env.v3} {
						out := env.must(bin, append([]string{"verify", "--key", pub, "--insecure-ignore-tlog", at(img)}, env.flags...)...)
						if !strings.Contains(out, img.Digest.String()) {
							t.Errorf("%s verify output lacks the digest:\n%s", filepath.Base(bin), out)
						}
					}
				}
				// The check can fail: a key that signed nothing is refused.
				other := filepath.Join(t.TempDir(), "other")
				env.must(env.v2, "generate-key-pair", "--output-key-prefix", other)
				if out, err := env.run(env.v3, append([]string{"verify", "--key", other + ".pub", "--insecure-ignore-tlog", at(img)}, env.flags...)...); err == nil {
					t.Fatalf("cosign3 accepted another key:\n%s", out)
				}
			})

			t.Run("we verify cosign v2", func(t *testing.T) {
				img := pushArtifact(t, tg, "cosign2 "+name)
				env.must(env.v2, append([]string{"sign", "--key", ourPriv, "--tlog-upload=false", at(img)}, env.flags...)...)
				sigs, err := loadPub(ourPub).Check(ctx, tg, img)
				if err != nil {
					t.Fatal(err)
				}
				if sigs[0].Format != verify.FormatCosign || sigs[0].Reference != repo {
					t.Fatalf("signature %+v", sigs[0])
				}
				if _, err := loadPub(cosignPub).Check(ctx, tg, img); err == nil {
					t.Fatal("accepted with a key that did not sign")
				}
			})

			t.Run("we verify cosign v3", func(t *testing.T) {
				img := pushArtifact(t, tg, "cosign3 "+name)
				env.must(env.v3, append([]string{"sign", "--key", cosignPriv, "--use-signing-config=false", "--tlog-upload=false", at(img)}, env.flags...)...)
				sigs, err := loadPub(cosignPub).Check(ctx, tg, img)
				if err != nil {
					t.Fatal(err)
				}
				if sigs[0].Format != verify.FormatBundle {
					t.Fatalf("signature %+v", sigs[0])
				}
				t.Logf("cosign v3 bundle found at %s", sigs[0].Where)
				if !reg.Referrers {
					// No referrers API: cosign v3 kept the fallback tag index.
					if _, err := tg.Resolve(ctx, strings.Replace(img.Digest.String(), ":", "-", 1)); err != nil {
						t.Fatalf("no fallback tag on a registry without referrers: %v", err)
					}
				}
				if _, err := loadPub(ourPub).Check(ctx, tg, img); err == nil {
					t.Fatal("accepted with a key that did not sign")
				}
			})

			t.Run("cosign v3 verifies a virtual-Sigstore keyless bundle", func(t *testing.T) {
				// Shows the keyless bundles the unit tests make are what
				// cosign itself accepts.
				ss := verifytest.New(t)
				img := pushArtifact(t, tg, "keyless "+name)
				ss.Attach(t, tg, img, "ci@example.com", "https://issuer.example")
				args := []string{"verify", "--trusted-root", ss.TrustedRoot, "--certificate-oidc-issuer", "https://issuer.example", "--insecure-ignore-sct"}
				env.must(env.v3, append(append(args, "--certificate-identity", "ci@example.com", at(img)), env.flags...)...)
				if out, err := env.run(env.v3, append(append(args, "--certificate-identity", "mallory@example.com", at(img)), env.flags...)...); err == nil {
					t.Fatalf("cosign3 accepted another identity:\n%s", out)
				}
			})

			t.Run("index signed by SignTree", func(t *testing.T) {
				a, b := pushArtifact(t, tg, "amd64 "+name), pushArtifact(t, tg, "arm64 "+name)
				index := pushIndex(t, tg, a, b)
				if _, err := verify.SignTree(ctx, tg, index, repo, signerFromCosignKey); err != nil {
					t.Fatal(err)
				}
				for _, d := range []ocispec.Descriptor{index, a, b} {
					env.must(env.v3, append([]string{"verify", "--key", cosignPub, "--insecure-ignore-tlog", at(d)}, env.flags...)...)
				}
			})
		})
	}
}

func mustLoad(t *testing.T, path string) *verify.Signer {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s, err := verify.LoadPrivateKey(b, []byte(password))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func pushIndex(t *testing.T, tg oci.Target, ms ...ocispec.Descriptor) ocispec.Descriptor {
	t.Helper()
	idx := ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageIndex, Manifests: ms}
	b, err := json.Marshal(idx)
	if err != nil {
		t.Fatal(err)
	}
	d := content.NewDescriptorFromBytes(ocispec.MediaTypeImageIndex, b)
	if err := tg.Push(context.Background(), d, bytes.NewReader(b)); err != nil {
		t.Fatal(err)
	}
	return d
}
