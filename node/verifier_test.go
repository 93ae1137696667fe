package node

import (
	"reflect"
	"testing"

	"github.com/sysext/sysext/verify"
)

// TestPolicyStringRoundTrip: what pull records is what update checks with,
// whatever the command line of the update says.
func TestPolicyStringRoundTrip(t *testing.T) {
	cmdline := verify.TrustOptions{Root: "/r", KeyPaths: []string{"/cmd.pub"}, CertIssuer: "https://cmd"}
	for _, o := range []verify.TrustOptions{
		{KeyPaths: []string{"/k1.pub", "/k2.pub"}},
		{PolicyPath: "/etc/p,o&l=i?cy.json"},
		{CertIdentity: "ci@example.com", CertIssuer: "https://issuer.example", TrustedRootPath: "/tr ust&=.json"},
		{CertIdentityRegexp: "^ci@", CertIssuerRegexp: "^https://.*$", TrustedRootPath: "/t.json", IgnoreTlog: true, KeyPaths: []string{"/k.pub"}},
		{KeyPaths: []string{"/k.pub"}, TrustedRootPath: "/t.json"},
		{KeyPaths: []string{"/a,b.pub"}},
	} {
		s := PolicyString(o)
		got, err := trustFromPolicy(cmdline, s)
		if err != nil {
			t.Fatalf("%q: %v", s, err)
		}
		want := o
		want.Root = "/r"
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%q: got %+v, want %+v", s, got, want)
		}
	}
	// Nothing recorded: the command line's trust applies.
	if got, err := trustFromPolicy(cmdline, ""); err != nil || !reflect.DeepEqual(got, cmdline) {
		t.Errorf("empty policy: %+v %v", got, err)
	}
	if _, err := trustFromPolicy(cmdline, "trust:%zz"); err == nil {
		t.Error("a corrupt recorded policy was accepted")
	}
}
