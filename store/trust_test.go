package store

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/sysext/sysext/verify"
)

// What pull records is what update checks with, whatever the command line
// of the update says; the text form (declarations, older states) reads
// back the same.
func TestTrustRoundTrip(t *testing.T) {
	cmdline := verify.TrustOptions{Root: "/r", KeyPaths: []string{"/cmd.pub"}, CertIssuer: "https://cmd"}
	for _, o := range []verify.TrustOptions{
		{KeyPaths: []string{"/k1.pub", "/k2.pub"}},
		{PolicyPath: "/etc/p,o&l=i?cy.json"},
		{CertIdentity: "ci@example.com", CertIssuer: "https://issuer.example", TrustedRootPath: "/tr ust&=.json"},
		{CertIdentityRegexp: "^ci@", CertIssuerRegexp: "^https://.*$", TrustedRootPath: "/t.json", IgnoreTlog: true, KeyPaths: []string{"/k.pub"}},
		{KeyPaths: []string{"/k.pub"}, TrustedRootPath: "/t.json"},
		{KeyPaths: []string{"/a,b.pub"}},
		{KeyPaths: []string{"/k.pub"}, VerityCertPaths: []string{"/verity.pem"}},
		{PolicyPath: "/etc/policy.json", VerityCertPaths: []string{"/a.pem", "/b.pem"}},
	} {
		tr := TrustOf(o)
		want := o
		want.Root = "/r"
		if got := tr.Options(cmdline); !reflect.DeepEqual(got, want) {
			t.Errorf("%+v: got %+v, want %+v", tr, got, want)
		}
		back, err := ParseTrust(tr.String())
		if err != nil || !back.Equal(tr) {
			t.Errorf("%q reads back as %+v (%v), want %+v", tr.String(), back, err, tr)
		}
		b, err := json.Marshal(tr)
		var fromJSON Trust
		if err != nil || json.Unmarshal(b, &fromJSON) != nil || !fromJSON.Equal(tr) {
			t.Errorf("%s does not read back as %+v", b, tr)
		}
	}
	// Nothing recorded: the command line's trust applies.
	if !TrustOf(verify.TrustOptions{}).IsZero() {
		t.Error("the default policy records something")
	}
	if got := (Trust{}).Options(cmdline); !reflect.DeepEqual(got, cmdline) {
		t.Errorf("empty trust: %+v", got)
	}
	if _, err := ParseTrust("trust:%zz"); err == nil {
		t.Error("a corrupt trust was accepted")
	}
}

// A state written before Trust (a "policy" string) loads, in each of its
// forms, and is written back typed; unknown fields are still refused, and
// so is a state with both.
func TestStateTrustMigration(t *testing.T) {
	entry := func(name, extra string) string {
		return `"` + name + `": {"name": "` + name + `", "source": "example.com/` + name + `:1"` + extra +
			`, "active": {"version": "1", "arch": "x86-64", "file": "` + name + `-1-x86-64.raw", "size": 1, "manifest_digest": "", "layer_digest": "", "installed_at": "2024-01-01T00:00:00Z"}, "activation": {}}`
	}
	write := func(body string) string {
		p := filepath.Join(t.TempDir(), "state.json")
		if err := os.WriteFile(p, []byte(`{"schema": 1, "extensions": {`+body+`}}`), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	p := write(strings.Join([]string{
		entry("a", `, "policy": "key:/etc/sysext/a.pub,/etc/sysext/b.pub"`),
		entry("b", `, "policy": "trust:identity=ci%40example.com&issuer=https%3A%2F%2Fi&key=%2Fk.pub&trusted-root=%2Ft.json"`),
		entry("c", `, "policy": "/etc/sysext/policy.d/c.json"`),
		entry("d", ``),
	}, ","))
	st, err := readState(p)
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]Trust{
		"a": {KeyPaths: []string{"/etc/sysext/a.pub", "/etc/sysext/b.pub"}},
		"b": {KeyPaths: []string{"/k.pub"}, CertIdentity: "ci@example.com", CertIssuer: "https://i", TrustedRootPath: "/t.json"},
		"c": {PolicyPath: "/etc/sysext/policy.d/c.json"},
		"d": {},
	} {
		if got := st.Extensions[name].Trust; !got.Equal(want) {
			t.Errorf("%s: %+v, want %+v", name, got, want)
		}
	}
	b, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), `"policy":"key:`) || !strings.Contains(string(b), `"trust":{"keys":["/etc/sysext/a.pub","/etc/sysext/b.pub"]}`) {
		t.Fatalf("written back: %s", b)
	}
	if strings.Count(string(b), `"trust"`) != 3 {
		t.Fatalf("a zero trust is written: %s", b)
	}

	for what, body := range map[string]string{
		"unknown field": entry("x", `, "bogus": 1`),
		"both":          entry("x", `, "policy": "/p.json", "trust": {"keys": ["/k.pub"]}`),
		"bad policy":    entry("x", `, "policy": "trust:%zz"`),
	} {
		var ce *CorruptStateError
		if _, err := readState(write(body)); !errors.As(err, &ce) {
			t.Errorf("%s: %v, want a CorruptStateError", what, err)
		}
	}
}
