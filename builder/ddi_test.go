package builder_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sysext/sysext/builder"
	"github.com/sysext/sysext/extension"
	"github.com/sysext/sysext/fsimage"
	"github.com/sysext/sysext/internal/testenv"
	"github.com/sysext/sysext/verity"
)

var (
	signerOnce sync.Once
	signerDir  string
)

// signer returns the paths of a verity signing key and certificate and of
// another certificate (made once per run: RSA 3072 takes a moment).
func signer(t *testing.T) (key, cert, foreignCert string) {
	t.Helper()
	signerOnce.Do(func() {
		dir, err := os.MkdirTemp("", "sysext-ddi-keys-")
		if err != nil {
			panic(err)
		}
		signerDir = dir
		for _, n := range []string{"signer", "foreign"} {
			k, c, err := verity.GenerateCertificate("sysext "+n, 0, time.Now())
			if err != nil {
				panic(err)
			}
			os.WriteFile(filepath.Join(dir, n+".key"), k, 0o600)
			os.WriteFile(filepath.Join(dir, n+".crt"), c, 0o644)
		}
	})
	return filepath.Join(signerDir, "signer.key"), filepath.Join(signerDir, "signer.crt"), filepath.Join(signerDir, "foreign.crt")
}

func ddiOpts(t *testing.T, tree, out string, fs builder.ImageFormat, signed bool) builder.Options {
	o := opts(tree, out, builder.DDI)
	o.Meta.Arch = "x86-64"
	o.Filesystem = fs
	if signed {
		o.SignKey, o.Certificate, _ = signer(t)
	}
	return o
}

// partitionFile writes one partition of a disk image to its own file, as
// veritysetup and openssl want them.
func partitionFile(t *testing.T, image string, p *fsimage.Partition) string {
	t.Helper()
	f, err := os.Open(image)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, p.Size)
	if _, err := f.ReadAt(b, p.Offset); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), p.Designator)
	if err := os.WriteFile(out, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return out
}

// toolsAccept runs the field's tools on a disk image: veritysetup verify
// over its data and hash partitions with rootHash, openssl cms -verify of
// its signature partition over the hex root hash against cert (systemd's
// NOINTERN|NOVERIFY mode). It returns the first refusal.
func toolsAccept(t *testing.T, image, rootHash, cert string) error {
	t.Helper()
	testenv.RequireTool(t, "veritysetup")
	testenv.RequireTool(t, "openssl")
	d := readDDI(t, image)
	data, hash := partitionFile(t, image, d.Data()), partitionFile(t, image, d.Hash())
	if out, err := exec.Command("veritysetup", "verify", data, hash, rootHash).CombinedOutput(); err != nil {
		return errors.New("veritysetup verify: " + string(out))
	}
	sp := d.SignaturePartition()
	if sp == nil {
		return nil
	}
	raw, _ := os.ReadFile(partitionFile(t, image, sp))
	raw = bytes.TrimRight(raw, "\x00")
	var sig struct {
		Signature string `json:"signature"`
	}
	if err := json.Unmarshal(raw, &sig); err != nil {
		return err
	}
	der, err := base64.StdEncoding.DecodeString(sig.Signature)
	if err != nil {
		return err
	}
	dir := t.TempDir()
	sigFile, content := filepath.Join(dir, "sig.der"), filepath.Join(dir, "roothash")
	os.WriteFile(sigFile, der, 0o644)
	os.WriteFile(content, []byte(rootHash), 0o644)
	if out, err := exec.Command("openssl", "cms", "-verify", "-binary", "-inform", "DER", "-in", sigFile, "-content", content,
		"-certfile", cert, "-nointern", "-noverify", "-out", os.DevNull).CombinedOutput(); err != nil {
		return errors.New("openssl cms -verify: " + string(out))
	}
	return nil
}

func readDDI(t *testing.T, image string) *fsimage.DDI {
	t.Helper()
	f, err := os.Open(image)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, _ := f.Stat()
	d, err := fsimage.ReadGPT(f, st.Size())
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// checkLayout checks what systemd looks for: the partition types of the
// architecture, the data and hash partition UUIDs made of the root hash's
// first and last 128 bits, the signature partition signing it.
func checkLayout(t *testing.T, res *builder.Result, signed bool) {
	t.Helper()
	d := readDDI(t, res.Path)
	want := []string{fsimage.DesignatorRoot, fsimage.DesignatorRootVerity}
	if signed {
		want = append(want, fsimage.DesignatorRootVeritySig)
	}
	if len(d.Partitions) != len(want) {
		t.Fatalf("%d partitions, want %d", len(d.Partitions), len(want))
	}
	for i, p := range d.Partitions {
		typ, _ := fsimage.PartitionType(want[i], "x86-64")
		if p.Type != typ || p.Designator != want[i] || p.Arch != "x86-64" {
			t.Errorf("partition %d: type %s (%s %s), want %s", p.Number, p.Type, p.Designator, p.Arch, want[i])
		}
		if p.Offset%4096 != 0 || p.Size%4096 != 0 {
			t.Errorf("partition %d is not 4 KiB aligned: %d+%d", p.Number, p.Offset, p.Size)
		}
	}
	rh := res.RootHash
	if d.Data().UUID != rh[0:8]+"-"+rh[8:12]+"-"+rh[12:16]+"-"+rh[16:20]+"-"+rh[20:32] ||
		d.Hash().UUID != rh[32:40]+"-"+rh[40:44]+"-"+rh[44:48]+"-"+rh[48:52]+"-"+rh[52:64] {
		t.Errorf("partition UUIDs %s and %s do not carry the root hash %s", d.Data().UUID, d.Hash().UUID, rh)
	}
	info, err := fsimage.OpenWith(context.Background(), res.Path, fsimage.Options{Verity: true})
	if err != nil {
		t.Fatal(err)
	}
	if info.Name != "sysext-test-hello" || info.Meta.Version != "7.7" || info.DDI.Filesystem != fsimage.Format(res.Filesystem) {
		t.Errorf("read back %s %s, %s", info.Name, info.Meta.Version, info.DDI.Filesystem)
	}
	if signed {
		_, cert, _ := signer(t)
		cb, _ := os.ReadFile(cert)
		certs, _ := verity.ParseCertificates(cb)
		root, _ := hex.DecodeString(rh)
		if _, err := info.DDI.Signature.Check(root, certs); err != nil {
			t.Error(err)
		}
		if res.Signer == nil || res.Signer.Fingerprint != verity.Fingerprint(certs[0]) {
			t.Errorf("result names signer %+v", res.Signer)
		}
	}
}

// A signed DDI built on this host (systemd-repart 252 cannot: veritysetup
// and our partition table) has the layout systemd expects, the field's
// tools accept it, and the same inputs give the same bytes.
func TestBuildDDI(t *testing.T) {
	defer builder.UseDDIBuilder(builder.DDIByVeritysetup)()
	testenv.RequireTool(t, "veritysetup")
	for _, fs := range formats {
		t.Run(string(fs), func(t *testing.T) {
			requireTool(t, fs)
			tree := writeTree(t, t.TempDir())
			out1, out2 := t.TempDir(), t.TempDir()
			res, err := builder.Build(context.Background(), ddiOpts(t, tree, out1, fs, true))
			if err != nil {
				t.Fatal(err)
			}
			if res.Format != builder.DDI || res.DDIBuilder != builder.DDIByVeritysetup || filepath.Base(res.Path) != "sysext-test-hello-7.7-x86-64.raw" {
				t.Fatalf("result %+v", res)
			}
			checkLayout(t, res, true)
			_, cert, _ := signer(t)
			if err := toolsAccept(t, res.Path, res.RootHash, cert); err != nil {
				t.Fatal(err)
			}
			again, err := builder.Build(context.Background(), ddiOpts(t, tree, out2, fs, true))
			if err != nil {
				t.Fatal(err)
			}
			a, _ := os.ReadFile(res.Path)
			b, _ := os.ReadFile(again.Path)
			if !bytes.Equal(a, b) {
				t.Fatal("two builds of the same tree differ")
			}
			if leftovers := listDir(t, out1); len(leftovers) != 1 {
				t.Fatalf("output directory holds %v", leftovers)
			}
		})
	}
}

// An unsigned DDI has no signature partition; the tree still protects it.
func TestBuildDDIUnsigned(t *testing.T) {
	defer builder.UseDDIBuilder(builder.DDIByVeritysetup)()
	testenv.RequireTool(t, "veritysetup")
	requireTool(t, builder.EROFS)
	res, err := builder.Build(context.Background(), ddiOpts(t, writeTree(t, t.TempDir()), t.TempDir(), builder.EROFS, false))
	if err != nil {
		t.Fatal(err)
	}
	checkLayout(t, res, false)
	if err := toolsAccept(t, res.Path, res.RootHash, ""); err != nil {
		t.Fatal(err)
	}
}

// Every tamper case is refused by the field's tools (veritysetup,
// openssl) and by our reader.
func TestDDITamperRefused(t *testing.T) {
	defer builder.UseDDIBuilder(builder.DDIByVeritysetup)()
	testenv.RequireTool(t, "veritysetup")
	requireTool(t, builder.EROFS)
	res, err := builder.Build(context.Background(), ddiOpts(t, writeTree(t, t.TempDir()), t.TempDir(), builder.EROFS, true))
	if err != nil {
		t.Fatal(err)
	}
	good, _ := os.ReadFile(res.Path)
	d := readDDI(t, res.Path)
	_, cert, foreign := signer(t)
	sigOff := d.SignaturePartition().Offset
	// A byte of the signature value, which ends the PKCS#7 (a changed
	// embedded certificate would not count: neither systemd nor the kernel
	// reads it).
	sigAt := sigOff + int64(bytes.Index(good[sigOff:], []byte(`"}`))) - 20
	for _, tc := range []struct {
		name   string
		at     int64  // byte to change, -1 for none
		root   string // root hash to check against ("" = the real one)
		cert   string
		reader string // what our reader says, "" when it cannot tell (trust)
	}{
		{"data", d.Data().Offset + 4096*2 + 100, "", cert, "does not match the data"},
		{"hash tree", d.Hash().Offset + 4096 + 10, "", cert, "does not match the data"},
		{"signature", sigAt, "", cert, ""},
		{"wrong root hash", -1, strings.Repeat("ab", 32), cert, ""},
		{"foreign certificate", -1, "", foreign, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			img := filepath.Join(t.TempDir(), "bad.raw")
			bad := bytes.Clone(good)
			if tc.at >= 0 {
				c := bad[tc.at]
				bad[tc.at] = map[bool]byte{true: 'B', false: 'A'}[c == 'A'] // stays base64 in the JSON
				if tc.name != "signature" {
					bad[tc.at] = c ^ 0x01
				}
			}
			os.WriteFile(img, bad, 0o644)
			root := tc.root
			if root == "" {
				root = res.RootHash
			}
			if err := toolsAccept(t, img, root, tc.cert); err == nil {
				t.Fatal("veritysetup and openssl accepted it")
			} else {
				t.Logf("refused: %.120s", err)
			}
			info, err := fsimage.OpenMetadata(context.Background(), img)
			if err != nil {
				t.Fatal(err)
			}
			_, verr := fsimage.VerifyDDI(context.Background(), img, info.DDI)
			if tc.reader != "" && (verr == nil || !strings.Contains(verr.Error(), tc.reader)) {
				t.Errorf("VerifyDDI = %v, want %q", verr, tc.reader)
			}
			if verr == nil {
				// The tree is intact: the signature must not check out
				// against the trusted certificate for this root hash.
				cb, _ := os.ReadFile(cert)
				if tc.cert == foreign {
					cb, _ = os.ReadFile(foreign)
				}
				certs, _ := verity.ParseCertificates(cb)
				rb, _ := hex.DecodeString(root)
				if _, err := info.DDI.Signature.Check(rb, certs); err == nil {
					t.Error("the signature checks out")
				} else if !errors.Is(err, verity.ErrBadSignature) && !errors.Is(err, verity.ErrUntrustedSigner) && !errors.Is(err, verity.ErrRootHashMismatch) {
					t.Errorf("unexpected error %v", err)
				}
			}
		})
	}
}

// On a host whose systemd-repart is 257 (here: Debian 13's, through
// wrappers) repart builds the image, offline; the result is the same kind
// of image and as reproducible.
func TestBuildDDIWithRepart(t *testing.T) {
	bin := testenv.TrixieBin(t)
	t.Setenv("PATH", bin+string(os.PathListSeparator)+os.Getenv("PATH"))
	for _, fs := range formats {
		t.Run(string(fs), func(t *testing.T) {
			tree := writeTree(t, t.TempDir())
			o := ddiOpts(t, tree, t.TempDir(), fs, true)
			o.Enable = []string{"sysext-test-hello.socket"}
			res, err := builder.Build(context.Background(), o)
			if err != nil {
				t.Fatal(err)
			}
			if res.DDIBuilder != builder.DDIByRepart {
				t.Fatalf("built by %s, want systemd-repart", res.DDIBuilder)
			}
			checkLayout(t, res, true)
			_, cert, _ := signer(t)
			if err := toolsAccept(t, res.Path, res.RootHash, cert); err != nil {
				t.Fatal(err)
			}
			info, _ := fsimage.OpenMetadata(context.Background(), res.Path)
			if len(info.Upholds) != 1 {
				t.Errorf("upholds %v: the staged drop-ins are missing", info.Upholds)
			}
			again, err := builder.Build(context.Background(), ddiOpts(t, tree, t.TempDir(), fs, true))
			if err != nil {
				t.Fatal(err)
			}
			if again.RootHash == res.RootHash {
				t.Fatal("a different tree (with --enable) gave the same root hash")
			}
			third, err := builder.Build(context.Background(), ddiOpts(t, tree, t.TempDir(), fs, true))
			if err != nil {
				t.Fatal(err)
			}
			a, _ := os.ReadFile(again.Path)
			b, _ := os.ReadFile(third.Path)
			if !bytes.Equal(a, b) {
				t.Fatal("two repart builds of the same tree differ")
			}
		})
	}
}

func TestBuildDDIRefuses(t *testing.T) {
	testenv.RequireTool(t, "veritysetup")
	requireTool(t, builder.EROFS)
	key, cert, foreign := signer(t)
	tree := writeTree(t, t.TempDir())
	encrypted := filepath.Join(t.TempDir(), "cosign.key")
	os.WriteFile(encrypted, []byte("-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED SIGSTORE PRIVATE KEY-----\n"), 0o600)
	for _, tc := range []struct {
		name string
		mod  func(o *builder.Options)
		want string
	}{
		{"any arch", func(o *builder.Options) { o.Meta.Arch = extension.AnyArch }, "give --arch"},
		{"key without certificate", func(o *builder.Options) { o.Certificate = "" }, "go together"},
		{"key of another certificate", func(o *builder.Options) { o.Certificate = foreign }, "is not the key of"},
		{"cosign key", func(o *builder.Options) { o.SignKey = encrypted }, "encrypted"},
		{"certificate as key", func(o *builder.Options) { o.SignKey = cert }, "no PEM private key"},
		{"bad fs", func(o *builder.Options) { o.Filesystem = "ext4" }, "erofs or squashfs"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := t.TempDir()
			o := ddiOpts(t, tree, out, builder.EROFS, true)
			o.SignKey = key
			tc.mod(&o)
			_, err := builder.Build(context.Background(), o)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
			if l := listDir(t, out); len(l) != 0 {
				t.Fatalf("left %v", l)
			}
		})
	}
}

// A build host with neither a systemd-repart that can nor veritysetup is
// told which package to install.
func TestBuildDDINeedsATool(t *testing.T) {
	requireTool(t, builder.EROFS)
	dir := t.TempDir()
	for _, tool := range []string{"mkfs.erofs", "systemd-repart"} {
		p, err := exec.LookPath(tool)
		if err != nil {
			continue
		}
		if tool == "systemd-repart" {
			// An old one: 252 cannot build offline.
			os.WriteFile(filepath.Join(dir, tool), []byte("#!/bin/sh\necho 'systemd 252 (252.38-1~deb12u1)'\n"), 0o755)
			continue
		}
		os.Symlink(p, filepath.Join(dir, tool))
	}
	t.Setenv("PATH", dir)
	_, err := builder.Build(context.Background(), ddiOpts(t, writeTree(t, t.TempDir()), t.TempDir(), builder.EROFS, false))
	if err == nil || !strings.Contains(err.Error(), "apt-get install cryptsetup-bin") {
		t.Fatalf("err = %v, want the package to install", err)
	}
}
