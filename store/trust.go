package store

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"

	"github.com/sysext/sysext/verify"
)

// Trust is the trust recorded for an extension: what its updates check
// signatures with, as given to the pull (--key, --policy, keyless flags) or
// declared (Policy=). Its paths are absolute. The zero value records
// nothing: the trust of the command that updates it applies.
type Trust struct {
	PolicyPath         string   `json:"policy,omitempty"`
	KeyPaths           []string `json:"keys,omitempty"`
	CertIdentity       string   `json:"certificate_identity,omitempty"`
	CertIdentityRegexp string   `json:"certificate_identity_regexp,omitempty"`
	CertIssuer         string   `json:"certificate_oidc_issuer,omitempty"`
	CertIssuerRegexp   string   `json:"certificate_oidc_issuer_regexp,omitempty"`
	TrustedRootPath    string   `json:"trusted_root,omitempty"`
	IgnoreTlog         bool     `json:"ignore_tlog,omitempty"`
	// VerityCertPaths are the certificates a disk image's dm-verity root
	// hash must be signed by (--verity-certificate), on top of the rest.
	VerityCertPaths []string `json:"verity_certificates,omitempty"`
}

// TrustOf is what to record for the trust options o: keys and a keyless
// identity (with the trusted root and --insecure-ignore-tlog that go with
// them) when given, else the policy file ("" for the default one).
// Root, AllowUnsigned (recorded apart) and where o came from are not
// part of it.
func TrustOf(o verify.TrustOptions) Trust {
	if len(o.KeyPaths) == 0 && !o.Keyless() {
		return Trust{PolicyPath: o.PolicyPath, VerityCertPaths: slices.Clone(o.VerityCertPaths)}
	}
	return Trust{
		KeyPaths:           slices.Clone(o.KeyPaths),
		CertIdentity:       o.CertIdentity,
		CertIdentityRegexp: o.CertIdentityRegexp,
		CertIssuer:         o.CertIssuer,
		CertIssuerRegexp:   o.CertIssuerRegexp,
		TrustedRootPath:    o.TrustedRootPath,
		IgnoreTlog:         o.IgnoreTlog,
		VerityCertPaths:    slices.Clone(o.VerityCertPaths),
	}
}

// IsZero reports whether t records nothing.
func (t Trust) IsZero() bool { return t.Equal(Trust{}) }

// Equal reports whether t and u record the same trust.
func (t Trust) Equal(u Trust) bool {
	return slices.Equal(t.KeyPaths, u.KeyPaths) && slices.Equal(t.VerityCertPaths, u.VerityCertPaths) &&
		t.PolicyPath == u.PolicyPath && t.TrustedRootPath == u.TrustedRootPath && t.IgnoreTlog == u.IgnoreTlog &&
		t.CertIdentity == u.CertIdentity && t.CertIdentityRegexp == u.CertIdentityRegexp &&
		t.CertIssuer == u.CertIssuer && t.CertIssuerRegexp == u.CertIssuerRegexp
}

// Options are the verify options t records, on top of base (the command
// line's, whose Root is kept): base itself when t records nothing.
func (t Trust) Options(base verify.TrustOptions) verify.TrustOptions {
	if t.IsZero() {
		return base
	}
	return verify.TrustOptions{
		Root:               base.Root,
		PolicyPath:         t.PolicyPath,
		KeyPaths:           slices.Clone(t.KeyPaths),
		CertIdentity:       t.CertIdentity,
		CertIdentityRegexp: t.CertIdentityRegexp,
		CertIssuer:         t.CertIssuer,
		CertIssuerRegexp:   t.CertIssuerRegexp,
		TrustedRootPath:    t.TrustedRootPath,
		IgnoreTlog:         t.IgnoreTlog,
		VerityCertPaths:    slices.Clone(t.VerityCertPaths),
	}
}

// Keys of the "trust:" text form.
const (
	trustPrefix     = "trust:"
	keyPrefix       = "key:"
	qKey            = "key"
	qIdentity       = "identity"
	qIdentityRegexp = "identity-regexp"
	qIssuer         = "issuer"
	qIssuerRegexp   = "issuer-regexp"
	qTrustedRoot    = "trusted-root"
	qIgnoreTlog     = "ignore-tlog"
	qVerityCert     = "verity-certificate"
	qPolicy         = "policy"
)

// ParseTrust reads the text form of a trust: a policy file,
// "key:PATH[,PATH]", or "trust:" and a URL query of keys, keyless
// identity, trusted root and ignore-tlog. A declaration's Policy= is
// written so, and so was the state's "policy" before Trust (still read).
func ParseTrust(s string) (Trust, error) {
	if keys, ok := strings.CutPrefix(s, keyPrefix); ok {
		return Trust{KeyPaths: strings.Split(keys, ",")}, nil
	}
	if enc, ok := strings.CutPrefix(s, trustPrefix); ok {
		q, err := url.ParseQuery(enc)
		if err != nil {
			return Trust{}, fmt.Errorf("trust %q: %w", s, err)
		}
		return Trust{
			KeyPaths:           q[qKey],
			CertIdentity:       q.Get(qIdentity),
			CertIdentityRegexp: q.Get(qIdentityRegexp),
			CertIssuer:         q.Get(qIssuer),
			CertIssuerRegexp:   q.Get(qIssuerRegexp),
			TrustedRootPath:    q.Get(qTrustedRoot),
			IgnoreTlog:         q.Get(qIgnoreTlog) != "",
			VerityCertPaths:    q[qVerityCert],
			PolicyPath:         q.Get(qPolicy),
		}, nil
	}
	return Trust{PolicyPath: s}, nil
}

// String is t's text form, as ParseTrust reads it: for messages.
func (t Trust) String() string {
	keyless := t.CertIdentity != "" || t.CertIdentityRegexp != "" || t.CertIssuer != "" || t.CertIssuerRegexp != ""
	switch {
	case len(t.KeyPaths) > 0 && !keyless && t.TrustedRootPath == "" && !t.IgnoreTlog && len(t.VerityCertPaths) == 0 && !strings.Contains(strings.Join(t.KeyPaths, ""), ","):
		return keyPrefix + strings.Join(t.KeyPaths, ",")
	case len(t.KeyPaths) > 0 || keyless || t.TrustedRootPath != "" || t.IgnoreTlog || len(t.VerityCertPaths) > 0:
		q := url.Values{}
		for _, k := range t.KeyPaths {
			q.Add(qKey, k)
		}
		for k, v := range map[string]string{qIdentity: t.CertIdentity, qIdentityRegexp: t.CertIdentityRegexp,
			qIssuer: t.CertIssuer, qIssuerRegexp: t.CertIssuerRegexp, qTrustedRoot: t.TrustedRootPath} {
			if v != "" {
				q.Set(k, v)
			}
		}
		if t.IgnoreTlog {
			q.Set(qIgnoreTlog, "1")
		}
		for _, c := range t.VerityCertPaths {
			q.Add(qVerityCert, c)
		}
		if t.PolicyPath != "" {
			q.Set(qPolicy, t.PolicyPath)
		}
		return trustPrefix + q.Encode()
	}
	return t.PolicyPath
}

// UnmarshalJSON reads an entry as strictly as the rest of the file
// (unknown fields are an error) and migrates the trust written before
// Trust existed: the string "policy" (ParseTrust's form).
func (e *Entry) UnmarshalJSON(b []byte) error {
	type entry Entry // the fields, without this method
	var v struct {
		entry
		Policy *string `json:"policy"`
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&v); err != nil {
		return err
	}
	*e = Entry(v.entry)
	if v.Policy == nil || *v.Policy == "" {
		return nil
	}
	if !e.Trust.IsZero() {
		return errors.New("both a trust and the older policy string are recorded")
	}
	t, err := ParseTrust(*v.Policy)
	if err != nil {
		return fmt.Errorf("recorded policy: %w", err)
	}
	e.Trust = t
	return nil
}
