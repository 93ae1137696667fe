package node

import (
	"context"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"path/filepath"
	"sort"
	"strings"

	"github.com/sysext/sysext/activate"
	"github.com/sysext/sysext/fsimage"
	"github.com/sysext/sysext/internal/smallfile"
	"github.com/sysext/sysext/oci"
	"github.com/sysext/sysext/store"
	"github.com/sysext/sysext/verify"
	"github.com/sysext/sysext/verity"
)

// The node's part of the chain of trust for signed disk images: the
// manifest's cosign signature was verified (Verifier); here its verity
// annotations are held against the trust policy before the download, the
// image's signature partition against the policy's certificates after it
// (oci.Download already checked the hash tree against the data and the
// root hash against the annotations), and then the certificate and the
// image policy are handed to systemd so the kernel enforces the root hash
// at every read.

// verityBefore checks the manifest's verity annotations against the
// policy, before anything is downloaded.
func verityBefore(v verify.Verified, e *oci.Entry) error {
	if len(v.VerityCertificates()) == 0 {
		return nil
	}
	var root, cert string
	if e.Manifest != nil {
		var err error
		if root, cert, err = oci.VerityFromAnnotations(e.Manifest.Annotations); err != nil {
			return err
		}
	}
	return v.CheckVerityAnnotations(root, cert)
}

// verityOf checks an image (downloaded, or already in the store) against
// the policy's verity requirement and returns what the state records, and
// the trusted certificate that signed it (nil when the policy names none).
func verityOf(v verify.Verified, info *fsimage.Info) (*store.Verity, *x509.Certificate, error) {
	var d *fsimage.DDI
	if info != nil {
		d = info.DDI
	}
	var root []byte
	if d != nil && d.RootHash != "" {
		root, _ = hex.DecodeString(d.RootHash)
	}
	cert, err := v.CheckVerity(d, root)
	if err != nil {
		return nil, nil, err
	}
	if d == nil || d.RootHash == "" {
		return nil, nil, nil
	}
	rec := &store.Verity{RootHash: d.RootHash}
	if cert != nil {
		rec.Signer, rec.CertificateSHA256 = cert.Subject.String(), verity.Fingerprint(cert)
	}
	return rec, cert, nil
}

// storedVerity reads a stored image again (write-once, digest-checked at
// commit) to check it against the current policy.
func storedVerity(ctx context.Context, v verify.Verified, path string) (*store.Verity, *x509.Certificate, error) {
	info, err := fsimage.OpenMetadata(ctx, path)
	if err != nil {
		if len(v.VerityCertificates()) > 0 {
			return nil, nil, err
		}
		return nil, nil, nil
	}
	return verityOf(v, info)
}

// unsignedOthers are the installed extensions other than name whose
// active image is no verity-signed disk image.
func unsignedOthers(s *store.Store, name string) []string {
	var out []string
	for _, other := range s.State().Names() {
		e, _ := s.Entry(other)
		if other != name && (e.Active.Verity == nil || e.Active.Verity.Signer == "") {
			out = append(out, other)
		}
	}
	sort.Strings(out)
	return out
}

// protect hands a verity-signed image's protection to systemd on root:
// the trusted certificate into /etc/verity.d and, when none of unsigned
// (the other active extensions that are no signed disk images) is left,
// the image policy that makes systemd refuse unsigned ones. What it could
// not do is warned about, with the reason.
func (n *Node) protect(ctx context.Context, root, extDir string, unsigned []string, name string, cert *x509.Certificate) error {
	if cert == nil {
		return nil
	}
	p, err := activate.InstallCertificate(root, cert)
	if err != nil {
		return err
	}
	n.logf("%s: verity certificate %s installed as %s", name, cert.Subject, p)
	v, _ := activate.SystemdVersion(root)
	if activate.ImagePolicySet(root, v) {
		return nil
	}
	if len(unsigned) > 0 {
		n.warnf("%s: image policy not set: %s %s no signed disk image, and systemd would refuse %s under it; until %s, an unsigned image put in %s would merge",
			name, strings.Join(unsigned, ", "), plural(len(unsigned), "is", "are"), plural(len(unsigned), "it", "them"),
			plural(len(unsigned), "it is", "they are"), extDir)
		return nil
	}
	if root == "" || filepath.Clean(root) == "/" {
		facts := activate.Gather(ctx, activate.System{Root: root})
		if !facts.Verity.Enforces() {
			n.warnf("%s: image policy not set: this kernel has no device-mapper with dm-verity, and systemd would refuse every extension under it", name)
			return nil
		}
	}
	written, err := activate.SetImagePolicy(root, v)
	if errors.Is(err, activate.ErrNoImagePolicy) {
		n.warnf("%s: %v", name, err)
		return nil
	}
	if err != nil {
		return err
	}
	for _, w := range written {
		n.logf("%s: image policy %s set in %s", name, activate.ImagePolicy, filepath.Clean(w))
	}
	if v == 0 {
		n.warnf("%s: the systemd version of %s is unknown: the image policy is only in sysext.conf.d, which systemd reads from 259 on", name, root)
	}
	return nil
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// verityImage is what the preflight knows of the manifest's disk image.
func verityImage(e *oci.Entry) *activate.ImageVerity {
	if e == nil || e.Manifest == nil || e.Layer.MediaType != oci.MediaTypeDisk {
		return nil
	}
	root, cert, err := oci.VerityFromAnnotations(e.Manifest.Annotations)
	if err != nil || root == "" {
		return nil
	}
	return &activate.ImageVerity{RootHash: root, Signed: cert != ""}
}

// describeVerity is the result's word on it.
func describeVerity(r *Result, rec *store.Verity) {
	if rec == nil {
		return
	}
	r.VerityRootHash = rec.RootHash
	if rec.Signer != "" {
		r.VeritySigner = fmt.Sprintf("%s (SHA-256 %s)", rec.Signer, rec.CertificateSHA256)
	}
}

// VerityStatus is one extension's verity protection in `sysext status`.
type VerityStatus struct {
	RootHash          string `json:"root_hash"`
	Signer            string `json:"signer,omitempty"` // the trusted certificate that verified, "" when none was asked for
	CertificateSHA256 string `json:"certificate_sha256,omitempty"`
	// Device is the dm-verity device systemd set up for it (named after
	// the root hash), when there is one.
	Device string `json:"device,omitempty"`
	// Enforced: merged through a dm-verity device, so the kernel checks
	// every block it reads against the root hash.
	Enforced bool `json:"enforced"`
	// Why says how, or why not, in one sentence.
	Why string `json:"why"`
}

func verityStatusOf(v *store.Verity) *VerityStatus {
	if v == nil {
		return nil
	}
	return &VerityStatus{RootHash: v.RootHash, Signer: v.Signer, CertificateSHA256: v.CertificateSHA256}
}

// verityEnforcement says, for each disk image, whether the kernel enforces
// it: on the running system, whether it is merged through the dm-verity
// device systemd names after its root hash; elsewhere what the image
// policy and the running kernel would give.
func (r *StatusReport) verityEnforcement(sys activate.System) {
	var any bool
	for _, x := range r.Extensions {
		any = any || x.Verity != nil
	}
	if !any {
		return
	}
	sys.Root = r.Root
	v, _ := activate.SystemdVersion(r.Root)
	facts := activate.GatherVerity(sys, "", v)
	devices := verityDevices(sys.SysBlock)
	for i := range r.Extensions {
		x := &r.Extensions[i]
		vs := x.Verity
		if vs == nil {
			continue
		}
		sentence, full := facts.Verdict(facts.PolicySet)
		switch {
		case r.Online && x.Merged && devices[vs.RootHash+"-verity"]:
			vs.Device = vs.RootHash + "-verity"
			vs.Enforced = true
			vs.Why = "merged through dm-verity device " + vs.Device + ": the kernel checks every block it reads"
			if !full {
				vs.Why += "; " + sentence
			}
		case r.Online && x.Merged:
			vs.Why = "merged WITHOUT dm-verity: nothing checks its blocks now (verity bypassed, or a different image merged under its name)"
		case r.Online:
			vs.Why = "not merged; " + sentence
		default:
			vs.Why = "on the running kernel: " + sentence
		}
		if vs.Signer == "" {
			vs.Why += "; no certificate of the trust policy checked its signature"
		}
	}
}

// verityDevices lists the device-mapper devices by name (/sys/block/dm-*/dm/name).
func verityDevices(sysBlock string) map[string]bool {
	if sysBlock == "" {
		sysBlock = "/sys/block"
	}
	out := map[string]bool{}
	matches, _ := filepath.Glob(filepath.Join(sysBlock, "dm-*", "dm", "name"))
	for _, m := range matches {
		if b, err := smallfile.Read(m, 4096); err == nil {
			out[strings.TrimSpace(string(b))] = true
		}
	}
	return out
}
