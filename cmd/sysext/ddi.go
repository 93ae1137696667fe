package main

import (
	"context"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"io"
	"time"

	"github.com/sysext/sysext/activate"
	"github.com/sysext/sysext/builder"
	"github.com/sysext/sysext/fsimage"
	"github.com/sysext/sysext/node"
	"github.com/sysext/sysext/oci"
	"github.com/sysext/sysext/verity"
)

// ddiJSON describes a disk image (DDI) in `build` and `inspect` output.
type ddiJSON struct {
	Filesystem string              `json:"filesystem"`
	Partitions []fsimage.Partition `json:"partitions,omitempty"`
	RootHash   string              `json:"root_hash,omitempty"`
	// HashTree says whether the dm-verity tree matches the data ("matches
	// the data", or why not); empty when not checked.
	HashTree   string        `json:"hash_tree,omitempty"`
	HashTreeOK bool          `json:"hash_tree_ok"`
	Signature  *ddiSignature `json:"signature,omitempty"`
	Builder    string        `json:"builder,omitempty"`
	now        func() time.Time
}

// ddiSignature is the signature partition: who signed, and whether the
// signature verifies over the root hash with that certificate. Whether the
// signer is trusted is the node's trust policy's question.
type ddiSignature struct {
	Certificate *verity.CertInfo `json:"certificate,omitempty"`
	Valid       bool             `json:"valid"`
	Reason      string           `json:"reason,omitempty"`
}

func builtDDIJSON(res *builder.Result) *ddiJSON {
	j := &ddiJSON{Filesystem: string(res.Filesystem), RootHash: res.RootHash, Builder: res.DDIBuilder}
	if res.Signer != nil {
		j.Signature = &ddiSignature{Certificate: res.Signer, Valid: true}
	}
	return j
}

// inspectDDI checks a disk image in full: the hash tree against the data
// (one read of the image), the root hash against the partition UUIDs and
// the signature against the certificate it carries.
func inspectDDI(ctx context.Context, path string, d *fsimage.DDI) *ddiJSON {
	j := &ddiJSON{Filesystem: string(d.Filesystem), Partitions: d.Partitions, RootHash: d.RootHash}
	tree, err := fsimage.VerifyDDI(ctx, path, d)
	switch {
	case err != nil:
		j.HashTree = err.Error()
	default:
		j.HashTree, j.HashTreeOK, j.RootHash = "matches the data", true, tree.RootHashHex()
	}
	if d.SignaturePartition() == nil {
		return j
	}
	s := &ddiSignature{}
	j.Signature = s
	if d.SignatureErr != nil {
		s.Reason = d.SignatureErr.Error()
		return j
	}
	c := d.Signature.EmbeddedSigner()
	if c == nil {
		s.Reason = "the signature carries no certificate; systemd checks it against /etc/verity.d"
		return j
	}
	ci := verity.Info(c)
	s.Certificate = &ci
	if ci.Fingerprint != d.Signature.CertificateFingerprint && d.Signature.CertificateFingerprint != "" {
		s.Reason = "certificateFingerprint names " + d.Signature.CertificateFingerprint + ", not the certificate it carries"
		return j
	}
	root, _ := hex.DecodeString(d.Signature.RootHash)
	if tree != nil {
		root = tree.RootHash
	}
	if _, err := d.Signature.Check(root, []*x509.Certificate{c}); err != nil {
		s.Reason = err.Error()
		return j
	}
	s.Valid = true
	return j
}

// lines is the human-readable form, after the image's own lines.
func (j *ddiJSON) lines() [][2]string {
	if j == nil {
		return nil
	}
	out := [][2]string{{"filesystem", j.Filesystem + " in the root partition"}}
	for _, p := range j.Partitions {
		what := p.Designator
		if what == "" {
			what = "type " + p.Type
		} else if p.Arch != "" {
			what += " (" + string(p.Arch) + ")"
		}
		out = append(out, [2]string{fmt.Sprintf("partition %d", p.Number), fmt.Sprintf("%s, %s at %d, uuid %s", what, humanSize(p.Size), p.Offset, p.UUID)})
	}
	if j.RootHash != "" {
		out = append(out, [2]string{"root hash", j.RootHash})
	}
	if j.HashTree != "" {
		v := "matches the data"
		if !j.HashTreeOK {
			v = "DOES NOT MATCH: " + j.HashTree
		}
		out = append(out, [2]string{"hash tree", v})
	}
	if j.Builder != "" {
		out = append(out, [2]string{"built with", j.Builder})
	}
	s := j.Signature
	if s == nil {
		out = append(out, [2]string{"signature", "none (the kernel checks the data against the root hash, but nothing says who made it)"})
		return out
	}
	if c := s.Certificate; c != nil {
		now := time.Now
		if j.now != nil {
			now = j.now
		}
		validity := fmt.Sprintf("%s to %s", c.NotBefore.Format(time.DateOnly), c.NotAfter.Format(time.DateOnly))
		if !c.ValidAt(now()) {
			validity += " (not valid now; neither systemd nor the kernel checks it)"
		}
		out = append(out, [2]string{"signed by", c.Subject},
			[2]string{"fingerprint", "SHA-256 " + c.Fingerprint},
			[2]string{"valid", validity})
	}
	v := "valid over the root hash"
	if !s.Valid {
		v = "INVALID: " + s.Reason
	}
	out = append(out, [2]string{"signature", v})
	return out
}

// verityRefLines shows what a manifest says about a disk image's verity:
// the root hash and the signing certificate, covered by the manifest's
// cosign signature.
func verityRefLines(ann map[string]string) [][2]string {
	root, cert, err := oci.VerityFromAnnotations(ann)
	switch {
	case err != nil:
		return [][2]string{{"verity", "unreadable annotations: " + err.Error()}}
	case root == "":
		return nil
	case cert == "":
		return [][2]string{{"root hash", root}, {"verity signer", "none (an unsigned disk image)"}}
	}
	return [][2]string{{"root hash", root}, {"verity signer", "certificate SHA-256 " + cert}}
}

// printVerityFacts is the preflight's line on signed disk images.
func printVerityFacts(w io.Writer, f *activate.VerityFacts) {
	if f == nil {
		return
	}
	yes := map[bool]string{true: "yes", false: "no"}
	sv := "unknown"
	if f.SystemdVersion > 0 {
		sv = fmt.Sprint(f.SystemdVersion)
	}
	fmt.Fprintf(w, "verity: device-mapper %s, dm-verity %s, systemd %s, root hash signature checked by the kernel keyring %s, by systemd against /etc/verity.d %s, image policy %s\n",
		yes[f.DeviceMapper], yes[f.DMVerity], sv, yes[f.KernelSignatures], yes[f.Userspace], map[bool]string{true: "set", false: "not set"}[f.PolicySet])
	sentence, _ := f.Verdict(f.PolicySet)
	fmt.Fprintf(w, "verity: a signed disk image here: %s\n", sentence)
}

// printVerityStatus adds, per disk image, whether verity enforces it and
// who signed it.
func printVerityStatus(w io.Writer, rep *node.StatusReport) {
	for _, e := range rep.Extensions {
		v := e.Verity
		if v == nil {
			continue
		}
		signer := "no trusted signer checked"
		if v.Signer != "" {
			signer = "signed by " + v.Signer + " (certificate SHA-256 " + v.CertificateSHA256 + ")"
		}
		state := "not enforced"
		if v.Enforced {
			state = "ENFORCED"
		}
		fmt.Fprintf(w, "%s: verity %s, %s, root hash %s: %s\n", e.Name, state, signer, v.RootHash, v.Why)
	}
}
