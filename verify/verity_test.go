package verify

import (
	"context"
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"

	"oras.land/oras-go/v2/content/memory"

	"github.com/sysext/sysext/verity"
)

// veritySigned in a policy file: per scope, next to sigstoreSigned; the
// Verified value carries its certificates to the node, and the annotation
// check before the download names what is missing.
func TestPolicyVeritySigned(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	acme := newTestSigner(t)
	_, certPEM, err := verity.GenerateCertificate("acme verity", time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	_, otherPEM, _ := verity.GenerateCertificate("other verity", time.Hour, time.Now())
	writeFile(t, dir, "acme.pub", pubPEM(t, acme))
	writeFile(t, dir, "acme.crt", string(certPEM))
	policy := writeFile(t, dir, "policy.json", `{
  "default": [{"type": "reject"}],
  "transports": {"docker": {
    "registry.example/acme": [
      {"type": "sigstoreSigned", "keyPath": "acme.pub"},
      {"type": "veritySigned", "certPath": "acme.crt"}
    ],
    "registry.example/data": [
      {"type": "insecureAcceptAnything"},
      {"type": "veritySigned", "certData": "`+base64.StdEncoding.EncodeToString(otherPEM)+`"}
    ],
    "registry.example/plain": [{"type": "sigstoreSigned", "keyPath": "acme.pub"}]
  }}
}`)
	p, err := LoadPolicy(policy, "")
	if err != nil {
		t.Fatal(err)
	}
	store := memory.New()
	img := pushImage(t, store, "img")
	if _, err := Sign(ctx, store, img, testRepo, acme); err != nil {
		t.Fatal(err)
	}
	certs, _ := verity.ParseCertificates(certPEM)
	fp := verity.Fingerprint(certs[0])

	v, err := p.Verify(ctx, store, "registry.example/acme/ext:1", img)
	if err != nil {
		t.Fatal(err)
	}
	if c := v.VerityCertificates(); len(c) != 1 || verity.Fingerprint(c[0]) != fp || v.Unsigned() {
		t.Fatalf("verity certificates %v, unsigned %v", c, v.Unsigned())
	}
	root := strings.Repeat("ab", 32)
	for _, tc := range []struct{ root, cert, want string }{
		{"", "", "names no verity root hash"},
		{root, "", "names no verity signing certificate"},
		{root, strings.Repeat("0", 64), "which the policy does not name"},
		{root, fp, ""},
	} {
		err := v.CheckVerityAnnotations(tc.root, tc.cert)
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want) || !errors.Is(err, ErrVerityRequired)) {
			t.Errorf("annotations %q %q: %v, want %q", tc.root, tc.cert, err, tc.want)
		}
	}
	if _, err := v.CheckVerity(nil, nil); !errors.Is(err, ErrVerityRequired) {
		t.Errorf("a plain image: %v", err)
	}

	v, err = p.Verify(ctx, store, "registry.example/data/ext:1", img)
	if err != nil || !v.Unsigned() || len(v.VerityCertificates()) != 1 {
		t.Fatalf("unsigned manifest, verity required: %v %v", v, err)
	}
	v, err = p.Verify(ctx, store, "registry.example/plain/ext:1", img)
	if err != nil || v.VerityCertificates() != nil || v.CheckVerityAnnotations("", "") != nil {
		t.Fatalf("no verity requirement: %v %v", v.VerityCertificates(), err)
	}

	for name, body := range map[string]string{
		"keys in veritySigned": `{"default": [{"type": "veritySigned", "keyPath": "acme.pub"}]}`,
		"no certificate":       `{"default": [{"type": "veritySigned"}]}`,
		"cert in sigstore":     `{"default": [{"type": "sigstoreSigned", "keyPath": "acme.pub", "certPath": "acme.crt"}]}`,
		"key file as cert":     `{"default": [{"type": "veritySigned", "certPath": "acme.pub"}]}`,
		"missing cert":         `{"default": [{"type": "veritySigned", "certPath": "nope.crt"}]}`,
	} {
		if _, err := ParsePolicy([]byte(body), dir+"/p.json", ""); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// --verity-certificate on the command line adds the requirement, needs a
// manifest requirement (or the explicit opt-out), and not --policy.
func TestTrustOptionsVerity(t *testing.T) {
	dir := t.TempDir()
	acme := newTestSigner(t)
	pub := writeFile(t, dir, "acme.pub", pubPEM(t, acme))
	_, certPEM, _ := verity.GenerateCertificate("acme verity", time.Hour, time.Now())
	cert := writeFile(t, dir, "acme.crt", string(certPEM))
	p, err := TrustOptions{KeyPaths: []string{pub}, VerityCertPaths: []string{cert}}.Policy()
	if err != nil || len(p.Default) != 2 || p.Default[1].Type != TypeVeritySigned {
		t.Fatalf("%+v %v", p, err)
	}
	if p, err := (TrustOptions{AllowUnsigned: true, VerityCertPaths: []string{cert}}).Policy(); err != nil || len(p.Default) != 2 {
		t.Fatalf("opt-out with verity: %+v %v", p, err)
	}
	if _, err := (TrustOptions{VerityCertPaths: []string{cert}}).Policy(); err == nil {
		t.Error("--verity-certificate alone accepted")
	}
	if _, err := (TrustOptions{PolicyPath: "x", VerityCertPaths: []string{cert}}).Policy(); err == nil {
		t.Error("--verity-certificate with --policy accepted")
	}
	if _, err := (TrustOptions{KeyPaths: []string{pub}, VerityCertPaths: []string{pub}}).Policy(); err == nil {
		t.Error("a public key accepted as a certificate")
	}
}
