package node

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/sysext/sysext/activate"
	"github.com/sysext/sysext/builder"
	"github.com/sysext/sysext/extension"
	"github.com/sysext/sysext/fsimage"
	"github.com/sysext/sysext/internal/testenv"
	"github.com/sysext/sysext/oci"
	"github.com/sysext/sysext/oci/ocitest"
	"github.com/sysext/sysext/store"
	"github.com/sysext/sysext/verify"
	"github.com/sysext/sysext/verity"
)

var (
	verityKeysOnce sync.Once
	verityKeysDir  string
)

// verityKeys returns a verity signing key and certificate and another
// certificate with its key (made once per run).
func verityKeys(t testing.TB) (key, cert, otherKey, otherCert string) {
	verityKeysOnce.Do(func() {
		dir, err := os.MkdirTemp("", "sysext-node-verity-")
		if err != nil {
			panic(err)
		}
		verityKeysDir = dir
		for _, n := range []string{"publisher", "stranger"} {
			k, c, err := verity.GenerateCertificate("sysext "+n, 0, time.Now())
			if err != nil {
				panic(err)
			}
			os.WriteFile(filepath.Join(dir, n+".key"), k, 0o600)
			os.WriteFile(filepath.Join(dir, n+".crt"), c, 0o644)
		}
	})
	d := verityKeysDir
	return filepath.Join(d, "publisher.key"), filepath.Join(d, "publisher.crt"), filepath.Join(d, "stranger.key"), filepath.Join(d, "stranger.crt")
}

// makeDDI builds a signed disk image of extension m (program NAME-hello).
func makeDDI(t testing.TB, m extension.Metadata, key, cert string) string {
	t.Helper()
	testenv.RequireTool(t, "veritysetup")
	testenv.RequireTool(t, "mksquashfs")
	tree := t.TempDir()
	must(t, os.MkdirAll(filepath.Join(tree, "usr/bin"), 0o755))
	must(t, os.WriteFile(filepath.Join(tree, "usr/bin", m.Name+"-hello"), []byte("#!/bin/sh\necho "+m.Name+" "+m.Version+"\n"), 0o755))
	// 1 MiB that does not compress: a tree of two levels.
	pad := make([]byte, 1<<20)
	rand.Read(pad)
	must(t, os.MkdirAll(filepath.Join(tree, "usr/share", m.Name), 0o755))
	must(t, os.WriteFile(filepath.Join(tree, "usr/share", m.Name, "pad"), pad, 0o644))
	res, err := builder.Build(context.Background(), builder.Options{
		Tree: tree, Meta: m, Format: builder.DDI, Filesystem: builder.Squashfs,
		Output: t.TempDir() + "/", SignKey: key, Certificate: cert,
	})
	must(t, err)
	return res.Path
}

// pushRaw pushes file as a sysext manifest with exactly the annotations
// given (a publisher that does not check what it pushes, or an attacker who
// got a tampered image signed) and signs it with signer.
func pushRaw(t testing.TB, ref string, file string, ann map[string]string, signer *verify.Signer) {
	t.Helper()
	ctx := context.Background()
	r, err := oci.ParseReference(ref)
	must(t, err)
	tg, err := oci.Open(ctx, r, ocitest.TestOptions())
	must(t, err)
	data, err := os.ReadFile(file)
	must(t, err)
	layer := ocispec.Descriptor{MediaType: oci.MediaTypeDisk, Digest: digest.FromBytes(data), Size: int64(len(data)),
		Annotations: map[string]string{oci.AnnotationTitle: filepath.Base(file)}}
	must(t, tg.Push(ctx, layer, bytes.NewReader(data)))
	if ok, _ := tg.Exists(ctx, ocispec.DescriptorEmptyJSON); !ok {
		must(t, tg.Push(ctx, ocispec.DescriptorEmptyJSON, bytes.NewReader(ocispec.DescriptorEmptyJSON.Data)))
	}
	cfg := ocispec.DescriptorEmptyJSON
	cfg.Data = nil
	body, err := json.Marshal(ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest,
		ArtifactType: oci.ArtifactType, Config: cfg, Layers: []ocispec.Descriptor{layer}, Annotations: ann})
	must(t, err)
	desc := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromBytes(body), Size: int64(len(body))}
	must(t, tg.Push(ctx, desc, bytes.NewReader(body)))
	must(t, tg.Tag(ctx, desc, r.Tag))
	_, err = verify.Sign(ctx, tg, desc, r.Repository, signer)
	must(t, err)
}

// annotationsOf are the annotations oci.Push would write for an image.
func annotationsOf(t testing.TB, file string) map[string]string {
	t.Helper()
	info, err := fsimage.OpenMetadata(context.Background(), file)
	must(t, err)
	a := oci.Annotations(info.Meta)
	a[oci.AnnotationFormat] = string(info.Format)
	for k, v := range oci.VerityAnnotations(info.DDI) {
		a[k] = v
	}
	return a
}

// flipAt writes a copy of file with one byte changed at off.
// flipBase64At changes the base64 character at off to the one whose 6-bit
// value differs in its lowest bit.
func flipBase64At(t testing.TB, file string, off int64) string {
	t.Helper()
	data, err := os.ReadFile(file)
	must(t, err)
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
	i := strings.IndexByte(alphabet, data[off])
	if i < 0 {
		t.Fatalf("byte %d is %q, not base64", off, data[off])
	}
	data[off] = alphabet[i^1]
	out := filepath.Join(t.TempDir(), filepath.Base(file))
	must(t, os.WriteFile(out, data, 0o644))
	return out
}

func flipAt(t testing.TB, file string, off int64) string {
	t.Helper()
	data, err := os.ReadFile(file)
	must(t, err)
	data[off] ^= 0x01
	out := filepath.Join(t.TempDir(), filepath.Base(file))
	must(t, os.WriteFile(out, data, 0o644))
	return out
}

// systemdRoot makes a node root whose systemd is version v (what
// activate.SystemdVersion reads).
func systemdRoot(t testing.TB, v string) string {
	root := nodeRoot(t, debianRelease)
	lib := filepath.Join(root, "usr/lib/systemd/libsystemd-shared-"+v+".so")
	must(t, os.MkdirAll(filepath.Dir(lib), 0o755))
	must(t, os.WriteFile(lib, nil, 0o644))
	return root
}

// A signed disk image whose cosign signature verifies is still refused
// when any link of the chain to the kernel is broken: a changed byte in its
// data, its hash tree or its signature partition, a root hash other than
// the manifest's, a signer the policy does not name. The good one is
// pulled, its certificate installed for systemd and the image policy set.
func TestPullSignedDDI(t *testing.T) {
	key, cert, strangerKey, strangerCert := verityKeys(t)
	priv, pub, err := verify.GenerateKeyPair([]byte("pw"))
	must(t, err)
	signer, err := verify.LoadPrivateKey(priv, []byte("pw"))
	must(t, err)
	pubFile := filepath.Join(t.TempDir(), "cosign.pub")
	must(t, os.WriteFile(pubFile, pub, 0o644))

	m := meta("vhello", "1.0")
	good := makeDDI(t, m, key, cert)
	ann := annotationsOf(t, good)
	info, err := fsimage.OpenMetadata(context.Background(), good)
	must(t, err)
	d := info.DDI
	sigPart, _ := os.ReadFile(good)
	sigPart = sigPart[d.SignaturePartition().Offset : d.SignaturePartition().Offset+d.SignaturePartition().Size]
	sigValue := d.SignaturePartition().Offset + int64(bytes.Index(sigPart, []byte(`"}`))) - 20

	reg := ocitest.NewOlareg(t)
	ref := func(tag string) string { return reg.Ref("ext/vhello:" + tag) }
	pushRaw(t, ref("good"), good, ann, signer)
	if d.Data().Size < 64<<10 || d.Hash().Size < 3*4096 {
		t.Fatalf("image too small for the tamper cases: %+v", d.Partitions)
	}
	pushRaw(t, ref("data"), flipAt(t, good, d.Data().Offset+32<<10), ann, signer)
	// Block 0 of the hash partition is the superblock, 1 the top level,
	// 2 the first block of level 0.
	pushRaw(t, ref("tree"), flipAt(t, good, d.Hash().Offset+2*4096+64), ann, signer)
	// A changed character of the base64 signature value: still JSON and
	// still base64 (one bit of the decoded signature differs).
	sigBad := flipBase64At(t, good, sigValue)
	pushRaw(t, ref("signature"), sigBad, ann, signer)
	other := map[string]string{}
	for k, v := range ann {
		other[k] = v
	}
	other[oci.AnnotationVerityRootHash] = strings.Repeat("ab", 32)
	pushRaw(t, ref("roothash"), good, other, signer)
	stranger := makeDDI(t, m, strangerKey, strangerCert)
	pushRaw(t, ref("stranger"), stranger, annotationsOf(t, stranger), signer)
	// The stranger's image under annotations that claim our certificate.
	claim := annotationsOf(t, stranger)
	claim[oci.AnnotationVerityCertificate] = ann[oci.AnnotationVerityCertificate]
	pushRaw(t, ref("claim"), stranger, claim, signer)
	push(t, ref("plain"), makeImage(t, m, 0))
	for _, md := range push(t, ref("plain"), makeImage(t, m, 0)).Manifests {
		r, _ := oci.ParseReference(ref("plain"))
		tg, _ := oci.Open(context.Background(), r, ocitest.TestOptions())
		_, err := verify.Sign(context.Background(), tg, md.Descriptor, r.Repository, signer)
		must(t, err)
	}

	root := systemdRoot(t, "257")
	trust := verify.TrustOptions{KeyPaths: []string{pubFile}, VerityCertPaths: []string{cert}, Root: root}
	n := New(Options{Store: storeOpts(root), OCI: ocitest.TestOptions(), Verifier: PolicyVerifier{Trust: trust}})
	ctx := context.Background()
	for _, tc := range []struct{ tag, want string }{
		{"data", "does not match the data"},
		{"tree", "does not match the data"},
		{"signature", "does not verify over the root hash"},
		{"roothash", "not the " + strings.Repeat("ab", 32)},
		{"stranger", "which the policy does not name"},
		{"claim", "not the " + ann[oci.AnnotationVerityCertificate]},
		{"plain", "names no verity root hash"},
	} {
		_, err := n.Pull(ctx, PullRequest{Ref: ref(tc.tag), Trust: store.TrustOf(trust)})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want %q", tc.tag, err, tc.want)
			continue
		}
		t.Logf("%s refused: %v", tc.tag, err)
	}
	if _, err := os.Lstat(filepath.Join(root, "var/lib/extensions/vhello.raw")); err == nil {
		t.Fatal("a refused pull left a link")
	}
	if _, err := os.Stat(filepath.Join(root, activate.ImagePolicyConf)); err == nil {
		t.Fatal("a refused pull set the image policy")
	}

	r, err := n.Pull(ctx, PullRequest{Ref: ref("good"), Trust: store.TrustOf(trust)})
	if err != nil {
		t.Fatal(err)
	}
	if r.VerityRootHash != d.RootHash || !strings.Contains(r.VeritySigner, "CN=sysext publisher") {
		t.Fatalf("result %+v", r)
	}
	certs, _ := os.ReadFile(cert)
	parsed, _ := verity.ParseCertificates(certs)
	installed, err := os.ReadFile(activate.CertificatePath(root, parsed[0]))
	if err != nil || !bytes.Equal(bytes.TrimSpace(installed), bytes.TrimSpace(certs)) {
		t.Fatalf("certificate not installed for systemd: %v", err)
	}
	for _, p := range []string{activate.ImagePolicyConf, activate.ImagePolicyDropIn} {
		b, err := os.ReadFile(filepath.Join(root, p))
		if err != nil || !strings.Contains(string(b), "root=signed+absent:usr=signed+absent") || strings.Contains(string(b), "verity+signed") {
			t.Fatalf("%s: %q %v", p, b, err)
		}
	}
	e := entry(t, root, "vhello")
	if e.Active.Verity == nil || e.Active.Verity.RootHash != d.RootHash || e.Active.Verity.CertificateSHA256 != ann[oci.AnnotationVerityCertificate] {
		t.Fatalf("state records %+v", e.Active.Verity)
	}
	// The recorded policy keeps the requirement for update.
	if _, err := n.Update(ctx, UpdateOptions{All: true}); err != nil {
		t.Fatal(err)
	}
}

// On systemd 252 there is no image policy to set: the certificate is
// installed and the node says what does not hold.
func TestPullSignedDDIOnOldSystemd(t *testing.T) {
	key, cert, _, _ := verityKeys(t)
	root := systemdRoot(t, "252")
	ref := ocitest.NewOlareg(t).Ref("ext/vold:1")
	push(t, ref, makeDDI(t, meta("vold", "1.0"), key, cert))
	var warn bytes.Buffer
	trust := verify.TrustOptions{AllowUnsigned: true, VerityCertPaths: []string{cert}, Root: root}
	n := New(Options{Store: storeOpts(root), OCI: ocitest.TestOptions(), Verifier: PolicyVerifier{Trust: trust}, Warn: &warn})
	if _, err := n.Pull(context.Background(), PullRequest{Ref: ref, AllowUnsigned: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, activate.ImagePolicyDropIn)); err == nil {
		t.Fatal("a drop-in 252 cannot read was written (its systemd-sysext.service would fail)")
	}
	if !strings.Contains(warn.String(), "takes no image policy") {
		t.Fatalf("no warning: %q", warn.String())
	}
	matches, _ := filepath.Glob(filepath.Join(root, "etc/verity.d/*.crt"))
	if len(matches) != 1 {
		t.Fatalf("certificates %v", matches)
	}
}

// Issue 19 point 11: a GPT layer is compared with its annotations before
// it is stored and linked, as every other layer is.
func TestGPTLayerAgreesWithAnnotations(t *testing.T) {
	key, cert, _, _ := verityKeys(t)
	ddi := makeDDI(t, meta("vmeta", "1.0"), key, cert)
	ann := annotationsOf(t, ddi)
	ann[oci.AnnotationVersion], ann[oci.AnnotationOCIVer] = "2.0", "2.0"
	priv, _, err := verify.GenerateKeyPair([]byte("pw"))
	must(t, err)
	signer, err := verify.LoadPrivateKey(priv, []byte("pw"))
	must(t, err)
	ref := ocitest.NewOlareg(t).Ref("ext/vmeta:2.0")
	pushRaw(t, ref, ddi, ann, signer)
	root := nodeRoot(t, debianRelease)
	_, err = testNode(root).Pull(context.Background(), PullRequest{Ref: ref})
	if err == nil || !strings.Contains(err.Error(), `SYSEXT_VERSION_ID is "1.0" in the image and "2.0" in the manifest`) {
		t.Fatalf("err = %v", err)
	}
	if _, err := os.Lstat(filepath.Join(root, "var/lib/extensions/vmeta.raw")); err == nil {
		t.Fatal("linked")
	}
}

// status: a disk image merged through the dm-verity device named after
// its root hash is enforced; merged otherwise it is not, and says so.
func TestStatusVerityEnforcement(t *testing.T) {
	rh := strings.Repeat("cd", 32)
	sysBlock := t.TempDir()
	dm := filepath.Join(sysBlock, "dm-0", "dm")
	os.MkdirAll(dm, 0o755)
	os.WriteFile(filepath.Join(dm, "name"), []byte(rh+"-verity\n"), 0o644)
	r := &StatusReport{Root: t.TempDir(), Online: true, byName: map[string]*ExtensionStatus{}}
	r.get("a")
	r.get("b")
	r.Extensions[0].Merged, r.Extensions[0].Verity = true, verityStatusOf(&store.Verity{RootHash: rh, Signer: "CN=x", CertificateSHA256: strings.Repeat("0", 64)})
	r.Extensions[1].Merged, r.Extensions[1].Verity = true, verityStatusOf(&store.Verity{RootHash: strings.Repeat("ef", 32)})
	r.verityEnforcement(activate.System{SysBlock: sysBlock, ProcMisc: filepath.Join(t.TempDir(), "none"), SysModule: t.TempDir()})
	if v := r.Extensions[0].Verity; !v.Enforced || v.Device != rh+"-verity" || !strings.Contains(v.Why, "dm-verity device") {
		t.Errorf("a: %+v", v)
	}
	if v := r.Extensions[1].Verity; v.Enforced || !strings.Contains(v.Why, "WITHOUT dm-verity") || !strings.Contains(v.Why, "no certificate of the trust policy") {
		t.Errorf("b: %+v", v)
	}
}
