package verify

import (
	"bytes"
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/sigstore/sigstore-go/pkg/root"
	"github.com/sigstore/sigstore/pkg/cryptoutils"

	"github.com/sysext/sysext/internal/inroot"
)

// DefaultPolicyPath is where the node's trust policy lives (under --root
// when one is given).
const DefaultPolicyPath = "/etc/sysext/policy.json"

// Requirement types of a policy file, as in containers' policy.json.
const (
	TypeSigstoreSigned         = "sigstoreSigned"
	TypeInsecureAcceptAnything = "insecureAcceptAnything"
	TypeReject                 = "reject"
	// TypeVeritySigned is sysext's: the image must be a disk image whose
	// dm-verity root hash is signed by one of the certificates named
	// (certPath, certPaths, certData). It is checked after the download,
	// on top of the scope's other requirements (see verity.go).
	TypeVeritySigned = "veritySigned"
)

// Transports a policy's scopes are grouped by: "docker" for registry
// references, "oci" for OCI layout directories (oci:PATH).
const (
	TransportDocker = "docker"
	TransportOCI    = "oci"
)

// Policy is a trust policy: requirements per scope, the most specific scope
// winning, and a default for everything else. Every requirement of the
// chosen scope must be met.
type Policy struct {
	Default    []PolicyRequirement
	Transports map[string]map[string][]PolicyRequirement
}

// PolicyRequirement is one entry of a scope's list.
type PolicyRequirement struct {
	Type string // TypeSigstoreSigned, TypeInsecureAcceptAnything, TypeReject
	// Sigstore is the signature requirement of a TypeSigstoreSigned entry.
	Sigstore Requirement
	// MatchRepository asks that a cosign payload's docker-reference names
	// the repository being verified (signedIdentity matchRepository).
	MatchRepository bool
	// VerityCertificates are a TypeVeritySigned entry's certificates.
	VerityCertificates []*x509.Certificate
}

// policyFile is the JSON shape.
type policyFile struct {
	Default    []json.RawMessage                       `json:"default"`
	Transports map[string]map[string][]json.RawMessage `json:"transports"`
}

type requirementFile struct {
	Type               string          `json:"type"`
	KeyPath            string          `json:"keyPath,omitempty"`
	KeyPaths           []string        `json:"keyPaths,omitempty"`
	KeyData            []byte          `json:"keyData,omitempty"`
	KeyDatas           [][]byte        `json:"keyDatas,omitempty"`
	Fulcio             *fulcioFile     `json:"fulcio,omitempty"`
	RekorPublicKeyPath string          `json:"rekorPublicKeyPath,omitempty"`
	RekorPublicKeyData []byte          `json:"rekorPublicKeyData,omitempty"`
	SignedIdentity     *signedIdentity `json:"signedIdentity,omitempty"`
	// sysext's additions: a Sigstore trusted root (Fulcio CAs, Rekor and
	// CT logs, TSAs) for keyless signatures, and the tlog opt-out.
	TrustedRootPath    string `json:"trustedRootPath,omitempty"`
	InsecureIgnoreTlog bool   `json:"insecureIgnoreTlog,omitempty"`
	// veritySigned's certificates: PEM files, or PEM data (base64 in the
	// JSON, as keyData).
	CertPath  string   `json:"certPath,omitempty"`
	CertPaths []string `json:"certPaths,omitempty"`
	CertData  []byte   `json:"certData,omitempty"`
	// sysext's addition: refuse old signatures served again.
	Freshness *freshnessFile `json:"freshness,omitempty"`
}

// freshnessFile is a requirement's "freshness": {"requireTag": true,
// "maxAge": "720h"} (a Go duration, or whole days as "30d").
type freshnessFile struct {
	RequireTag bool   `json:"requireTag,omitempty"`
	MaxAge     string `json:"maxAge,omitempty"`
}

type fulcioFile struct {
	CAPath       string `json:"caPath,omitempty"`
	CAData       []byte `json:"caData,omitempty"`
	OIDCIssuer   string `json:"oidcIssuer,omitempty"`
	SubjectEmail string `json:"subjectEmail,omitempty"`
	// sysext's additions, as cosign's --certificate-identity[-regexp] and
	// --certificate-oidc-issuer-regexp.
	Subject          string `json:"subject,omitempty"`
	SubjectRegexp    string `json:"subjectRegexp,omitempty"`
	OIDCIssuerRegexp string `json:"oidcIssuerRegexp,omitempty"`
}

type signedIdentity struct {
	Type string `json:"type"`
}

// PolicyError is a policy file that cannot be used; Line is 1-based, 0 when
// unknown.
type PolicyError struct {
	File string
	Line int
	Err  error
}

func (e *PolicyError) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("policy %s line %d: %v", e.File, e.Line, e.Err)
	}
	return fmt.Sprintf("policy %s: %v", e.File, e.Err)
}

func (e *PolicyError) Unwrap() error { return e.Err }

// maxPolicySize bounds a policy file; real ones are a few KiB.
const maxPolicySize = 4 << 20

// LoadPolicy reads and parses the policy file at file, a path inside
// rootDir (for --root; "" or "/" for the running system, where it is a
// host path). Key and certificate paths inside it that are relative are
// taken from the file's directory; absolute ones are taken inside rootDir.
// Every path is resolved inside rootDir (internal/inroot): a symlink in the
// tree cannot make it read a host file.
func LoadPolicy(file, rootDir string) (*Policy, error) {
	if inroot.IsHost(rootDir) && !filepath.IsAbs(file) {
		// A --policy the user typed is relative to the working directory.
		if abs, err := filepath.Abs(file); err == nil {
			file = abs
		}
	}
	shown := file
	if !inroot.IsHost(rootDir) {
		shown = filepath.Join(rootDir, file)
	}
	b, err := inroot.ReadFile(rootDir, file, maxPolicySize)
	if err != nil {
		return nil, fmt.Errorf("policy %s: %w", shown, err)
	}
	return parsePolicy(b, shown, file, rootDir)
}

// ParsePolicy parses a policy file's content; name is used in errors and to
// resolve relative paths (inside rootDir).
func ParsePolicy(b []byte, name, rootDir string) (*Policy, error) {
	return parsePolicy(b, name, name, rootDir)
}

// parsePolicy parses b; shown names the file in errors, name is its path
// inside rootDir, for the paths it names.
func parsePolicy(b []byte, shown, name, rootDir string) (*Policy, error) {
	perr := func(off int64, err error) error {
		return &PolicyError{File: shown, Line: lineAt(b, off), Err: err}
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var pf policyFile
	if err := dec.Decode(&pf); err != nil {
		return nil, perr(jsonErrorOffset(b, err), err)
	}
	if dec.More() {
		return nil, perr(dec.InputOffset(), errors.New("extra data after the policy object"))
	}
	if pf.Default == nil {
		return nil, perr(0, errors.New(`no "default" list (use [{"type": "reject"}] to refuse everything not listed)`))
	}
	l := loader{data: b, name: shown, dir: filepath.Dir(name), root: rootDir}
	p := &Policy{Transports: map[string]map[string][]PolicyRequirement{}}
	var err error
	if p.Default, err = l.requirements(pf.Default, "default"); err != nil {
		return nil, err
	}
	for tr, scopes := range pf.Transports {
		if tr != TransportDocker && tr != TransportOCI {
			return nil, perr(indexOf(b, `"`+tr+`"`), fmt.Errorf("unknown transport %q (want %q or %q)", tr, TransportDocker, TransportOCI))
		}
		p.Transports[tr] = map[string][]PolicyRequirement{}
		for scope, raw := range scopes {
			if tr == TransportDocker && strings.Contains(scope, "@") || strings.HasSuffix(scope, "/") {
				return nil, perr(indexOf(b, `"`+scope+`"`), fmt.Errorf("scope %q: want host, host/namespace, host/repository or host/repository:tag, without a digest", scope))
			}
			reqs, err := l.requirements(raw, tr+" scope "+scope)
			if err != nil {
				return nil, err
			}
			p.Transports[tr][scope] = reqs
		}
	}
	return p, nil
}

type loader struct {
	data      []byte
	name, dir string
	root      string
}

func (l *loader) errAt(raw json.RawMessage, err error) error {
	return &PolicyError{File: l.name, Line: lineAt(l.data, l.offsetOf(raw)), Err: err}
}

// offsetOf finds where raw sits in the file, for line numbers.
func (l *loader) offsetOf(raw json.RawMessage) int64 {
	i := bytes.Index(l.data, raw)
	if i < 0 {
		return 0
	}
	return int64(i)
}

func (l *loader) requirements(raws []json.RawMessage, where string) ([]PolicyRequirement, error) {
	if len(raws) == 0 {
		return nil, &PolicyError{File: l.name, Err: fmt.Errorf("%s: empty requirement list (use [{\"type\": \"reject\"}] to refuse)", where)}
	}
	out := make([]PolicyRequirement, 0, len(raws))
	for _, raw := range raws {
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.DisallowUnknownFields()
		var rf requirementFile
		if err := dec.Decode(&rf); err != nil {
			return nil, l.errAt(raw, fmt.Errorf("%s: %w", where, err))
		}
		r, err := l.requirement(rf)
		if err != nil {
			off := l.offsetOf(raw)
			if i := bytes.Index(raw, []byte(`"type"`)); i >= 0 && off >= 0 {
				off += int64(i) // the line of the "type" key says which entry
			}
			return nil, &PolicyError{File: l.name, Line: lineAt(l.data, off), Err: fmt.Errorf("%s: %w", where, err)}
		}
		out = append(out, r)
	}
	return out, nil
}

func (l *loader) requirement(rf requirementFile) (PolicyRequirement, error) {
	r := PolicyRequirement{Type: rf.Type}
	switch rf.Type {
	case TypeInsecureAcceptAnything, TypeReject:
		if rf.KeyPath != "" || rf.KeyPaths != nil || rf.KeyData != nil || rf.KeyDatas != nil || rf.Fulcio != nil {
			return r, fmt.Errorf("type %q takes no keys", rf.Type)
		}
		return r, nil
	case TypeSigstoreSigned:
		if rf.CertPath != "" || rf.CertPaths != nil || rf.CertData != nil {
			return r, errors.New(`certPath, certPaths and certData belong to a "veritySigned" requirement`)
		}
	case TypeVeritySigned:
		return l.verityRequirement(rf)
	case "":
		return r, errors.New(`requirement has no "type"`)
	default:
		return r, fmt.Errorf("unknown requirement type %q (want %q, %q, %q or %q)", rf.Type, TypeSigstoreSigned, TypeVeritySigned, TypeInsecureAcceptAnything, TypeReject)
	}
	var err error
	if r.Sigstore, err = l.sigstoreRequirement(rf); err != nil {
		return r, err
	}
	if si := rf.SignedIdentity; si != nil {
		switch si.Type {
		case "matchRepository", "matchRepoDigestOrExact", "matchExact":
			r.MatchRepository = true
		default:
			return r, fmt.Errorf("signedIdentity type %q is not supported (use matchRepository, or leave it out)", si.Type)
		}
	}
	return r, nil
}

// sigstoreRequirement reads what a sigstoreSigned entry asks for: keys, or
// Fulcio identities; the trusted material that checks them; freshness.
func (l *loader) sigstoreRequirement(rf requirementFile) (Requirement, error) {
	req := Requirement{IgnoreTlog: rf.InsecureIgnoreTlog}
	var err error
	if req.Keys, err = l.publicKeys(rf); err != nil {
		return req, err
	}
	var materials root.TrustedMaterialCollection
	if rf.TrustedRootPath != "" {
		b, err := l.read(rf.TrustedRootPath, maxTrustedRootSize)
		if err != nil {
			return req, fmt.Errorf("trustedRootPath %s: %w", rf.TrustedRootPath, err)
		}
		tr, err := root.NewTrustedRootFromJSON(b)
		if err != nil {
			return req, fmt.Errorf("trustedRootPath %s: %w", rf.TrustedRootPath, err)
		}
		materials = append(materials, tr)
	}
	if f := rf.Fulcio; f != nil {
		if len(req.Keys) > 0 {
			return req, errors.New("give either keys or fulcio, not both")
		}
		id, ca, err := l.fulcio(f)
		if err != nil {
			return req, err
		}
		if ca != nil {
			materials = append(materials, ca)
		}
		req.Identities = append(req.Identities, id)
	}
	if data, err := l.pathOrData(rf.RekorPublicKeyPath, rf.RekorPublicKeyData); err != nil {
		return req, fmt.Errorf("rekorPublicKeyPath: %w", err)
	} else if data != nil {
		lm, err := logMaterial(data)
		if err != nil {
			return req, fmt.Errorf("rekor public key: %w", err)
		}
		materials = append(materials, lm)
	}
	if len(materials) > 0 {
		req.TrustedMaterial = materials
	}
	if len(req.Keys) == 0 && len(req.Identities) == 0 {
		return req, errors.New(`sigstoreSigned needs "keyPath", "keyPaths", "keyData" or "fulcio"`)
	}
	if len(req.Identities) > 0 && (req.TrustedMaterial == nil || len(req.TrustedMaterial.FulcioCertificateAuthorities()) == 0) {
		return req, errors.New(`fulcio needs "caPath", "caData" or a "trustedRootPath" holding certificate authorities`)
	}
	if f := rf.Freshness; f != nil {
		if req.Freshness, err = freshness(f); err != nil {
			return req, err
		}
	}
	return req, nil
}

// publicKeys reads an entry's keys: keyPath, keyPaths (read from files),
// keyData and keyDatas (inline PEM), in that order.
func (l *loader) publicKeys(rf requirementFile) ([]crypto.PublicKey, error) {
	keyPEMs, err := l.pems("key", rf.KeyPath, rf.KeyPaths, rf.KeyData)
	if err != nil {
		return nil, err
	}
	keyPEMs = append(keyPEMs, rf.KeyDatas...)
	var keys []crypto.PublicKey
	for _, b := range keyPEMs {
		k, err := LoadPublicKey(b)
		if err != nil {
			return nil, err
		}
		keys = append(keys, k)
	}
	return keys, nil
}

// pems reads the PEM files an entry names (one, then many, read as
// l.read does) followed by its inline data when given. what names the
// field in errors.
func (l *loader) pems(what, one string, many []string, data []byte) ([][]byte, error) {
	paths := many
	if one != "" {
		paths = append([]string{one}, paths...)
	}
	var out [][]byte
	for _, p := range paths {
		b, err := l.read(p, maxKeyFileSize)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", what, err)
		}
		out = append(out, b)
	}
	if data != nil {
		out = append(out, data)
	}
	return out, nil
}

// fulcio reads a fulcio entry: the identity certificates must name, and
// the certificate authority (nil when the trusted root gives it).
func (l *loader) fulcio(f *fulcioFile) (Identity, root.TrustedMaterial, error) {
	var ca root.TrustedMaterial
	data, err := l.pathOrData(f.CAPath, f.CAData)
	if err != nil {
		return Identity{}, nil, fmt.Errorf("fulcio caPath: %w", err)
	}
	if data != nil {
		if ca, err = caMaterial(data); err != nil {
			return Identity{}, nil, fmt.Errorf("fulcio CA: %w", err)
		}
	}
	id := Identity{Subject: f.SubjectEmail, SubjectRegexp: f.SubjectRegexp, Issuer: f.OIDCIssuer, IssuerRegexp: f.OIDCIssuerRegexp}
	if f.Subject != "" {
		id.Subject = f.Subject
	}
	if err := id.validate(); err != nil {
		return Identity{}, nil, fmt.Errorf("fulcio: %w", err)
	}
	return id, ca, nil
}

// freshness reads what a freshness entry asks of a signature's age and tag.
func freshness(f *freshnessFile) (Freshness, error) {
	fr := Freshness{RequireTag: f.RequireTag}
	if f.MaxAge != "" {
		d, err := parseAge(f.MaxAge)
		if err != nil {
			return fr, fmt.Errorf("freshness.maxAge: %w", err)
		}
		fr.MaxAge = d
	}
	if !fr.enabled() {
		return fr, errors.New(`freshness asks for nothing: set "requireTag": true and/or "maxAge" (e.g. "720h" or "30d")`)
	}
	return fr, nil
}

// pathOrData is a file the policy gives by path (read, bounded by
// maxKeyFileSize) or inline; nil when it gives neither.
func (l *loader) pathOrData(p string, data []byte) ([]byte, error) {
	if p == "" {
		return data, nil
	}
	return l.read(p, maxKeyFileSize)
}

// read reads a file named in the policy: a relative path from the policy
// file's directory, an absolute one inside the root, resolved there.
func (l *loader) read(p string, limit int64) ([]byte, error) {
	if !filepath.IsAbs(p) {
		p = filepath.Join(l.dir, p)
	}
	return inroot.ReadFile(l.root, p, limit)
}

// parseAge reads a Go duration ("720h") or whole days ("30d").
func parseAge(s string) (time.Duration, error) {
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.Atoi(days)
		if err != nil || n <= 0 {
			return 0, fmt.Errorf("%q is not a number of days like \"30d\"", s)
		}
		return time.Duration(n) * 24 * time.Hour, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("%q is not a positive duration like \"720h\" or \"30d\"", s)
	}
	return d, nil
}

func (id Identity) validate() error {
	if id.Subject == "" && id.SubjectRegexp == "" {
		return errors.New("a keyless identity needs a subject (certificate identity) or a subject regexp")
	}
	if id.Issuer == "" && id.IssuerRegexp == "" {
		return errors.New("a keyless identity needs an OIDC issuer or an issuer regexp")
	}
	for _, re := range []string{id.SubjectRegexp, id.IssuerRegexp} {
		if re != "" {
			if _, err := regexp.Compile(re); err != nil {
				return fmt.Errorf("regexp %q: %w", re, err)
			}
		}
	}
	return nil
}

// caMaterial trusts the PEM certificates in data as a Fulcio CA: the last
// is the root, the others intermediates.
func caMaterial(data []byte) (root.TrustedMaterial, error) {
	certs, err := cryptoutils.UnmarshalCertificatesFromPEM(data)
	if err != nil {
		return nil, err
	}
	if len(certs) == 0 {
		return nil, errors.New("no PEM certificate")
	}
	ca := &root.FulcioCertificateAuthority{Root: certs[len(certs)-1], Intermediates: certs[:len(certs)-1]}
	return &staticMaterial{cas: []root.CertificateAuthority{ca}}, nil
}

// logMaterial trusts a Rekor log by its public key.
func logMaterial(data []byte) (root.TrustedMaterial, error) {
	pub, err := LoadPublicKey(data)
	if err != nil {
		return nil, err
	}
	der, err := cryptoutils.MarshalPublicKeyToDER(pub)
	if err != nil {
		return nil, err
	}
	id := sha256.Sum256(der)
	tl := &root.TransparencyLog{
		ID:                  id[:],
		HashFunc:            crypto.SHA256,
		PublicKey:           pub,
		SignatureHashFunc:   crypto.SHA256,
		ValidityPeriodStart: time.Unix(1, 0),
	}
	return &staticMaterial{logs: map[string]*root.TransparencyLog{fmt.Sprintf("%x", id[:]): tl}}, nil
}

// staticMaterial is trusted material made from a policy's CA and log keys.
type staticMaterial struct {
	root.BaseTrustedMaterial
	cas  []root.CertificateAuthority
	logs map[string]*root.TransparencyLog
}

func (m *staticMaterial) FulcioCertificateAuthorities() []root.CertificateAuthority { return m.cas }
func (m *staticMaterial) RekorLogs() map[string]*root.TransparencyLog {
	if m.logs == nil {
		return map[string]*root.TransparencyLog{}
	}
	return m.logs
}

// Scope is where a reference falls in a policy: its transport and the
// repository ("host/repo", or the layout directory for oci:).
type Scope struct {
	Transport string
	Name      string
	Tag       string // the tag, if the reference has one (docker only)
}

// ScopeOf returns the policy scope of a reference such as
// "ghcr.io/acme/ext:1.0", "host/repo@sha256:…" or "oci:/srv/layout:tag".
func ScopeOf(ref string) Scope {
	if rest, ok := strings.CutPrefix(ref, "oci:"); ok {
		tag := ""
		if i := strings.LastIndex(rest, "@"); i > strings.LastIndex(rest, "/") {
			rest = rest[:i]
		}
		if i := strings.LastIndex(rest, ":"); i > strings.LastIndex(rest, "/") {
			rest, tag = rest[:i], rest[i+1:]
		}
		if abs, err := filepath.Abs(rest); err == nil {
			rest = abs
		}
		return Scope{Transport: TransportOCI, Name: rest, Tag: tag}
	}
	s := Scope{Transport: TransportDocker, Name: repositoryOf(ref)}
	rest := ref
	if i := strings.Index(rest, "@"); i >= 0 {
		rest = rest[:i]
	}
	if i := strings.LastIndex(rest, ":"); i > strings.LastIndex(rest, "/") {
		s.Tag = rest[i+1:]
	}
	return s
}

// repositoryOf strips tag and digest from a registry reference.
func repositoryOf(ref string) string {
	if i := strings.Index(ref, "@"); i >= 0 {
		ref = ref[:i]
	}
	if i := strings.LastIndex(ref, ":"); i > strings.LastIndex(ref, "/") {
		ref = ref[:i]
	}
	return ref
}

// RequirementsFor returns the requirements of the most specific scope that
// holds s, and the scope's name ("default" when none does).
func (p *Policy) RequirementsFor(s Scope) ([]PolicyRequirement, string) {
	scopes := p.Transports[s.Transport]
	for _, cand := range candidateScopes(s) {
		if reqs, ok := scopes[cand]; ok {
			if cand == "" {
				return reqs, s.Transport + " default"
			}
			return reqs, cand
		}
	}
	return p.Default, "default"
}

// candidateScopes lists the scope names that could hold s, most specific
// first: the repository, each parent namespace, the host, wildcard
// domains (*.example.com) for registries, then the transport's "" default.
func candidateScopes(s Scope) []string {
	var out []string
	name := s.Name
	if s.Transport == TransportOCI {
		for d := name; ; d = filepath.Dir(d) {
			out = append(out, d)
			if d == "/" || d == "." {
				break
			}
		}
		return append(out, "")
	}
	if s.Tag != "" {
		out = append(out, name+":"+s.Tag) // containers allows a tag in a docker scope
	}
	for n := name; n != "" && n != "."; n = path.Dir(n) {
		out = append(out, n)
		if !strings.Contains(n, "/") {
			break
		}
	}
	host, _, _ := strings.Cut(name, "/")
	host, _, _ = strings.Cut(host, ":")
	labels := strings.Split(host, ".")
	for i := 1; i < len(labels); i++ {
		out = append(out, "*."+strings.Join(labels[i:], "."))
	}
	return append(out, "")
}

// Verify checks manifest desc, read from src under reference ref, against
// the policy and returns the Verified value the node store requires.
func (p *Policy) Verify(ctx context.Context, src Source, ref string, desc ocispec.Descriptor) (Verified, error) {
	scope := ScopeOf(ref)
	reqs, scopeName := p.RequirementsFor(scope)
	if len(reqs) == 0 {
		return Verified{}, fmt.Errorf("%s: policy scope %s has no requirements: refusing", ref, scopeName)
	}
	var signers []string
	var sigs []Signature
	var verityCerts []*x509.Certificate
	allUnsigned := true
	for _, r := range reqs {
		switch r.Type {
		case TypeReject:
			return Verified{}, fmt.Errorf("%s: the trust policy rejects images from %s (scope %s)", ref, scope.Name, scopeName)
		case TypeInsecureAcceptAnything:
			continue
		case TypeVeritySigned:
			// Checked on the image after the download (CheckVerity).
			verityCerts = append(verityCerts, r.VerityCertificates...)
			continue
		case TypeSigstoreSigned:
			allUnsigned = false
			req := r.Sigstore
			if r.MatchRepository && scope.Transport == TransportDocker {
				req.Repository = scope.Name
			}
			req.Tag = scope.Tag
			got, err := req.Check(ctx, src, desc)
			if err != nil {
				return Verified{}, fmt.Errorf("%s: %w", ref, err)
			}
			sigs = append(sigs, got...)
			for _, s := range got {
				signers = appendUnique(signers, s.Signer)
			}
		default:
			return Verified{}, fmt.Errorf("%s: unknown requirement type %q", ref, r.Type)
		}
	}
	vr := verityRequirement{certs: verityCerts, scope: scopeName}
	if allUnsigned {
		v := acceptUnsigned(desc.Digest)
		v.verity = vr
		return v, nil
	}
	sort.Strings(signers)
	return Verified{digest: desc.Digest, signer: strings.Join(signers, ", "), signatures: sigs, verity: vr}, nil
}

func appendUnique(list []string, s string) []string {
	for _, x := range list {
		if x == s {
			return list
		}
	}
	return append(list, s)
}

// lineAt returns the 1-based line of byte offset off in b.
func lineAt(b []byte, off int64) int {
	if off <= 0 {
		return 0
	}
	if off > int64(len(b)) {
		off = int64(len(b))
	}
	return bytes.Count(b[:off], []byte("\n")) + 1
}

func indexOf(b []byte, s string) int64 {
	return int64(bytes.Index(b, []byte(s)))
}

// jsonErrorOffset finds where a decoding error happened.
func jsonErrorOffset(b []byte, err error) int64 {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		return se.Offset
	case errors.As(err, &te):
		return te.Offset
	case errors.Is(err, io.ErrUnexpectedEOF):
		return int64(len(b))
	}
	// "json: unknown field "x"": find the field.
	if _, f, ok := strings.Cut(err.Error(), "unknown field "); ok {
		return indexOf(b, f)
	}
	return 0
}

// VerifyEntry checks manifest m, which a node is about to install and which
// it found listed in index idx (the tag's target). A valid signature on m
// counts, and so does one on idx: idx's digest pins every manifest it lists,
// and `cosign sign` on an index signs only the index unless --recursive.
// The result names m's digest either way. Pass an empty idx when m was not
// reached through an index.
func (p *Policy) VerifyEntry(ctx context.Context, src Source, ref string, idx, m ocispec.Descriptor) (Verified, error) {
	v, err := p.Verify(ctx, src, ref, m)
	if err == nil || idx.Digest == "" || idx.Digest == m.Digest {
		return v, err
	}
	entries, ferr := indexManifests(ctx, src, idx)
	if ferr != nil {
		return Verified{}, fmt.Errorf("%w (and its %v)", err, ferr)
	}
	listed := false
	for _, d := range entries {
		if d.Digest == m.Digest {
			listed = true
			break
		}
	}
	if !listed {
		return Verified{}, fmt.Errorf("%w (and index %s does not list it)", err, idx.Digest)
	}
	iv, ierr := p.Verify(ctx, src, ref, idx)
	if ierr != nil {
		return Verified{}, fmt.Errorf("%w; nor does its index: %v", err, ierr)
	}
	return Verified{digest: m.Digest, signer: iv.signer, unsigned: iv.unsigned, signatures: iv.signatures, verity: iv.verity}, nil
}
