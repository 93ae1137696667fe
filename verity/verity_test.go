package verity

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sysext/sysext/internal/testenv"
)

// format runs the real veritysetup format over data and returns the hash
// device's path and the root hash it printed.
func format(t *testing.T, data string, args ...string) (string, string) {
	t.Helper()
	testenv.RequireTool(t, "veritysetup")
	hash := data + ".hash"
	out, err := exec.Command("veritysetup", append(append([]string{"format"}, args...), data, hash)...).CombinedOutput()
	if err != nil {
		t.Fatalf("veritysetup format: %v\n%s", err, out)
	}
	for _, l := range strings.Split(string(out), "\n") {
		if v, ok := strings.CutPrefix(l, "Root hash:"); ok {
			return hash, strings.TrimSpace(v)
		}
	}
	t.Fatalf("veritysetup printed no root hash:\n%s", out)
	return "", ""
}

func randomFile(t *testing.T, size int) string {
	t.Helper()
	b := make([]byte, size)
	rand.Read(b)
	p := filepath.Join(t.TempDir(), "data")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func verifyFiles(t *testing.T, data, hash string) (*Tree, error) {
	t.Helper()
	d, err := os.Open(data)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	h, err := os.Open(hash)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	ds, _ := d.Stat()
	hs, _ := h.Stat()
	return Verify(context.Background(), d, ds.Size(), h, hs.Size())
}

func flip(t *testing.T, path string, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0x40
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

// Our reading of the tree agrees with veritysetup's for trees of one to
// three levels, 4 KiB and 512-byte blocks (systemd-repart 252 writes the
// latter), with and without a salt.
func TestVerifyAgreesWithVeritysetup(t *testing.T) {
	for _, tc := range []struct {
		name string
		size int
		args []string
	}{
		{"one block", 4096, nil},
		{"two levels", 4096 * 300, nil},
		{"three levels, 512-byte blocks", 512 * 20000, []string{"--data-block-size=512", "--hash-block-size=512"}},
		{"no salt", 4096 * 129, []string{"--salt=-"}},
		{"sha512", 4096 * 1000, []string{"--hash=sha512"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data := randomFile(t, tc.size)
			hash, want := format(t, data, tc.args...)
			tree, err := verifyFiles(t, data, hash)
			if err != nil {
				t.Fatal(err)
			}
			if got := tree.RootHashHex(); got != want {
				t.Fatalf("root hash %s, veritysetup says %s", got, want)
			}
		})
	}
}

// A changed byte in the data, in any level of the tree or in the
// superblock is found, and veritysetup verify agrees that it is broken.
func TestVerifyFindsTampering(t *testing.T) {
	const blocks = 5000 // four levels of 512-byte hash blocks
	data := randomFile(t, 512*blocks)
	hash, root := format(t, data, "--data-block-size=512", "--hash-block-size=512")
	levels, _, _, _ := Params{Algorithm: "sha256", DataBlockSize: 512, HashBlockSize: 512, DataBlocks: blocks}.geometry()
	if len(levels) != 4 {
		t.Fatalf("%d levels", len(levels))
	}
	for _, tc := range []struct {
		name string
		file string
		off  int64
	}{
		{"data, first block", data, 0},
		{"data, last block", data, 512*blocks - 1},
		{"tree, level 0", hash, int64(levels[0].start+3)*512 + 7},
		{"tree, level 1", hash, int64(levels[1].start)*512 + 100},
		{"tree, top level", hash, int64(levels[3].start) * 512},
	} {
		t.Run(tc.name, func(t *testing.T) {
			flip(t, tc.file, tc.off)
			defer flip(t, tc.file, tc.off)
			tree, err := verifyFiles(t, data, hash)
			// A changed top block still verifies level by level but gives
			// another root hash: the caller compares it with the signed one.
			if err == nil && tree.RootHashHex() == root {
				t.Fatal("tampering not noticed")
			}
			if err != nil && !errors.Is(err, ErrTreeMismatch) {
				t.Fatalf("want ErrTreeMismatch, got %v", err)
			}
			if out, err := exec.Command("veritysetup", "verify", data, hash, root).CombinedOutput(); err == nil {
				t.Fatalf("veritysetup verify accepted the tampered pair:\n%s", out)
			}
		})
	}
	if _, err := verifyFiles(t, data, hash); err != nil {
		t.Fatalf("restored pair: %v", err)
	}
}

func TestSuperblockBounds(t *testing.T) {
	good := Params{Algorithm: "sha256", DataBlockSize: 4096, HashBlockSize: 4096, DataBlocks: 10, Salt: make([]byte, 32)}
	if _, err := ParseSuperblock(good.Marshal()); err != nil {
		t.Fatal(err)
	}
	for name, mod := range map[string]func(b []byte){
		"magic":      func(b []byte) { b[0] = 'x' },
		"hash type":  func(b []byte) { b[12] = 0 },
		"block size": func(b []byte) { b[64], b[65] = 0, 0x30 },
		"algorithm":  func(b []byte) { copy(b[32:], "md5\x00\x00\x00") },
		"salt size":  func(b []byte) { b[80], b[81] = 0xff, 0xff },
		"no blocks":  func(b []byte) { clear(b[72:80]) },
		"huge":       func(b []byte) { b[79] = 0xff },
	} {
		b := good.Marshal()
		mod(b)
		if _, err := ParseSuperblock(b); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

var (
	keyOnce          sync.Once
	keyPEM, certPEM  []byte
	key2PEM, cert2PM []byte
)

// testPair returns a key pair and another one (generated once per run:
// RSA 3072 takes a moment).
func testPairs(t *testing.T) (k1, c1, k2, c2 []byte) {
	t.Helper()
	keyOnce.Do(func() {
		var err error
		now := time.Now()
		if keyPEM, certPEM, err = GenerateCertificate("sysext test signer", 0, now); err != nil {
			panic(err)
		}
		if key2PEM, cert2PM, err = GenerateCertificate("someone else", 0, now); err != nil {
			panic(err)
		}
	})
	return keyPEM, certPEM, key2PEM, cert2PM
}

func load(t *testing.T, k, c []byte) (*x509.Certificate, *Signature) {
	t.Helper()
	key, err := ParsePrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	certs, err := ParseCertificates(c)
	if err != nil {
		t.Fatal(err)
	}
	root, _ := hex.DecodeString("ef87a379dc7560ab95325f7ef84d0d45a0e8d81ba68e64dfaa1ff69dba8c82cb")
	sig, err := Sign(root, certs[0], key)
	if err != nil {
		t.Fatal(err)
	}
	return certs[0], sig
}

// openssl, the tool systemd's userspace check is built on, verifies our
// signature the way systemd calls it (NOINTERN, NOVERIFY) and as a CMS
// verification against the certificate as trust anchor; it refuses a
// changed signature, another root hash and a foreign certificate, and so
// does Check.
func TestSignatureInteropWithOpenSSL(t *testing.T) {
	testenv.RequireTool(t, "openssl")
	k1, c1, _, c2 := testPairs(t)
	cert, sig := load(t, k1, c1)
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	certFile, foreignFile := write("cert.pem", c1), write("foreign.pem", c2)
	content := write("roothash", []byte(sig.RootHash))
	opensslVerify := func(sigDER []byte, contentFile, cert string) error {
		s := write("sig.der", sigDER)
		for _, args := range [][]string{
			{"cms", "-verify", "-binary", "-inform", "DER", "-in", s, "-content", contentFile, "-certfile", cert, "-nointern", "-noverify", "-out", os.DevNull},
			{"cms", "-verify", "-binary", "-inform", "DER", "-in", s, "-content", contentFile, "-CAfile", cert, "-purpose", "any", "-out", os.DevNull},
		} {
			if out, err := exec.Command("openssl", args...).CombinedOutput(); err != nil {
				return errors.New(string(out))
			}
		}
		return nil
	}
	if err := opensslVerify(sig.PKCS7, content, certFile); err != nil {
		t.Fatalf("openssl refuses our signature: %v", err)
	}
	root, _ := hex.DecodeString(sig.RootHash)
	if got, err := sig.Check(root, []*x509.Certificate{cert}); err != nil || got != cert {
		t.Fatalf("Check: %v", err)
	}

	// A flipped byte in the signature value.
	bad := bytes.Clone(sig.PKCS7)
	bad[len(bad)-10] ^= 1
	if opensslVerify(bad, content, certFile) == nil {
		t.Error("openssl accepted a changed signature")
	}
	if _, err := (&Signature{RootHash: sig.RootHash, PKCS7: bad}).Check(root, []*x509.Certificate{cert}); !errors.Is(err, ErrBadSignature) {
		t.Errorf("changed signature: want ErrBadSignature, got %v", err)
	}
	// Another root hash.
	other := write("other", []byte(strings.Repeat("0", 64)))
	if opensslVerify(sig.PKCS7, other, certFile) == nil {
		t.Error("openssl accepted the signature over another root hash")
	}
	zero := make([]byte, 32)
	if _, err := sig.Check(zero, []*x509.Certificate{cert}); !errors.Is(err, ErrRootHashMismatch) {
		t.Errorf("other root hash: want ErrRootHashMismatch, got %v", err)
	}
	forged := &Signature{RootHash: hex.EncodeToString(zero), PKCS7: sig.PKCS7}
	if _, err := forged.Check(zero, []*x509.Certificate{cert}); !errors.Is(err, ErrBadSignature) {
		t.Errorf("signature moved to another root hash: want ErrBadSignature, got %v", err)
	}
	// A foreign certificate.
	if opensslVerify(sig.PKCS7, content, foreignFile) == nil {
		t.Error("openssl accepted the signature against a foreign certificate")
	}
	foreign, _ := ParseCertificates(c2)
	if _, err := sig.Check(root, foreign); !errors.Is(err, ErrUntrustedSigner) || !strings.Contains(err.Error(), "sysext test signer") {
		t.Errorf("foreign certificate: want ErrUntrustedSigner naming the signer, got %v", err)
	}
}

// A signature openssl makes as systemd-repart does (smime -sign -noattr
// -binary) passes Check: we read what the field writes.
func TestCheckReadsOpenSSLSignatures(t *testing.T) {
	testenv.RequireTool(t, "openssl")
	k1, c1, _, _ := testPairs(t)
	dir := t.TempDir()
	hexRoot := strings.Repeat("ab", 32)
	for name, b := range map[string][]byte{"key.pem": k1, "cert.pem": c1, "root": []byte(hexRoot)} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	out, err := exec.Command("openssl", "smime", "-sign", "-nocerts", "-noattr", "-binary", "-outform", "DER",
		"-in", filepath.Join(dir, "root"), "-inkey", filepath.Join(dir, "key.pem"), "-signer", filepath.Join(dir, "cert.pem")).Output()
	if err != nil {
		t.Fatalf("openssl smime -sign: %v", err)
	}
	certs, _ := ParseCertificates(c1)
	root, _ := hex.DecodeString(hexRoot)
	s := &Signature{RootHash: hexRoot, PKCS7: out}
	if _, err := s.Check(root, certs); err != nil {
		t.Fatal(err)
	}
}

// The same RSA key, certificate and root hash give the same partition
// bytes: DDIs stay reproducible. The partition parses back.
func TestSignatureReproducibleAndRoundTrips(t *testing.T) {
	k1, c1, _, _ := testPairs(t)
	_, a := load(t, k1, c1)
	_, b := load(t, k1, c1)
	pa, err := a.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	pb, _ := b.Marshal()
	if !bytes.Equal(pa, pb) || len(pa)%4096 != 0 {
		t.Fatalf("two signatures differ or are not block-sized (%d bytes)", len(pa))
	}
	back, err := ParseSignaturePartition(pa)
	if err != nil {
		t.Fatal(err)
	}
	if back.RootHash != a.RootHash || back.CertificateFingerprint != a.CertificateFingerprint || !bytes.Equal(back.PKCS7, a.PKCS7) {
		t.Fatal("round trip changed the signature")
	}
	if c := back.EmbeddedSigner(); c == nil || Fingerprint(c) != a.CertificateFingerprint {
		t.Fatal("the embedded signer is not the certificate")
	}
	for name, in := range map[string][]byte{
		"junk after padding": append(bytes.Clone(pa[:len(pa)-1]), 'x'),
		"not json":           []byte("hello"),
		"bad hex":            []byte(`{"rootHash":"zz","signature":"AA=="}`),
		"no signature":       []byte(`{"rootHash":"` + a.RootHash + `"}`),
		"not pkcs7":          []byte(`{"rootHash":"` + a.RootHash + `","signature":"AAAA"}`),
		"two objects":        []byte(`{"rootHash":"` + a.RootHash + `","signature":"AAAA"}{}`),
	} {
		if _, err := ParseSignaturePartition(in); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestKeysAndCertificates(t *testing.T) {
	k1, c1, k2, _ := testPairs(t)
	certs, err := ParseCertificates(c1)
	if err != nil {
		t.Fatal(err)
	}
	key2, _ := ParsePrivateKey(k2)
	if _, err := Sign(make([]byte, 32), certs[0], key2); err == nil {
		t.Error("signed with a key that is not the certificate's")
	}
	if _, err := ParseCertificates(k1); err == nil {
		t.Error("a key file was taken for a certificate")
	}
	if _, err := ParsePrivateKey(c1); err == nil {
		t.Error("a certificate was taken for a key")
	}
	if _, err := ParsePrivateKey([]byte("-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n")); err == nil || !strings.Contains(err.Error(), "encrypted") {
		t.Errorf("encrypted key: %v", err)
	}
	info := Info(certs[0])
	if info.Subject != "CN=sysext test signer" || !ValidFingerprint(info.Fingerprint) || !info.ValidAt(time.Now()) || info.ValidAt(time.Now().Add(20*365*24*time.Hour)) {
		t.Errorf("info: %+v", info)
	}
}
