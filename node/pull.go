package node

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"path/filepath"

	"github.com/sysext/sysext/activate"
	"github.com/sysext/sysext/extension"
	"github.com/sysext/sysext/oci"
	"github.com/sysext/sysext/store"
)

// PullRequest says what to pull.
type PullRequest struct {
	Ref           string // host/repo:tag, @sha256:..., oci:PATH[:tag]
	Name          string // expected extension name ("" = from the manifest)
	Policy        string // trust policy file for this extension ("" = default)
	AllowUnsigned bool   // --insecure-allow-unsigned
	Declared      string // the extensions.d file that declared it (sync)
}

// Result says what one extension's operation did.
type Result struct {
	Name       string `json:"name"`
	Version    string `json:"version,omitempty"`
	From       string `json:"from,omitempty"` // the version active before
	Digest     string `json:"digest,omitempty"`
	Source     string `json:"source,omitempty"`
	Signer     string `json:"signer,omitempty"`
	Unsigned   bool   `json:"unsigned,omitempty"`
	File       string `json:"file,omitempty"`
	Changed    bool   `json:"changed"`
	Action     string `json:"action"` // pulled, updated, unchanged, would-update, rolled-back, removed, failed, ...
	Activation string `json:"activation,omitempty"`
	Resumes    int    `json:"resumes,omitempty"`
	Error      string `json:"error,omitempty"`
	// A disk image's dm-verity root hash and the trusted certificate that
	// signed it (node/verity.go).
	VerityRootHash string `json:"verity_root_hash,omitempty"`
	VeritySigner   string `json:"verity_signer,omitempty"`
}

// Pull resolves, verifies, checks, stores and activates one extension.
func (n *Node) Pull(ctx context.Context, req PullRequest) (*Result, error) {
	s, err := n.open(ctx)
	if err != nil {
		return nil, err
	}
	defer s.Close()
	n.resume(ctx, s, false)
	return n.pull(ctx, s, req, nil)
}

// resolved is a reference already resolved by update.
type resolvedRef struct {
	t   oci.Target
	ref oci.Reference
}

func (n *Node) pull(ctx context.Context, s *store.Store, req PullRequest, pre *resolvedRef) (*Result, error) {
	var t oci.Target
	var ref oci.Reference
	if pre != nil {
		t, ref = pre.t, pre.ref
	} else {
		r, err := oci.ParseReference(req.Ref)
		if err != nil {
			return nil, err
		}
		ref = r
		if t, err = oci.Open(ctx, ref, n.opts.OCI); err != nil {
			return nil, err
		}
	}
	if req.Name != "" {
		if err := extension.ValidateName(req.Name); err != nil {
			return nil, fmt.Errorf("--name: %w", err)
		}
	}
	n.hook("resolve")
	res, err := oci.Resolve(ctx, t, ref, n.arch())
	if err != nil {
		return nil, err
	}
	e := &res.Entry
	name := req.Name
	switch {
	case e.Kind == oci.KindSysext && name != "" && e.Metadata.Name != name:
		return nil, fmt.Errorf("%s: the manifest is for extension %q, not %q: check the reference or --name", ref, e.Metadata.Name, name)
	case e.Kind == oci.KindSysext:
		name = e.Metadata.Name
	case name == "":
		return nil, fmt.Errorf("%s: the artifact carries no sysext annotations (%s), so its extension name is unknown: give --name NAME", ref, e.Kind)
	}
	result := &Result{Name: name, Version: e.Metadata.Version, Digest: e.Descriptor.Digest.String(), Source: req.Ref}
	cur, installed := s.Entry(name)
	if installed {
		result.From = cur.Active.Version
	}
	// Already active: a fast no-op (the active image was verified when it
	// was installed).
	if installed && !s.Options().Copy && cur.Active.ManifestDigest == e.Descriptor.Digest && n.linkOK(s, name, cur) {
		result.Action, result.Version, result.File = "unchanged", cur.Active.Version, cur.Active.File
		if cur.Active.ResolvedDigest != res.Root.Digest || cur.Source != req.Ref {
			if err := s.Touch(name, req.Ref, res.Root.Digest); err != nil {
				return nil, err
			}
		}
		return result, nil
	}
	n.hook("verify")
	if n.opts.Verifier == nil {
		return nil, errors.New("no trust policy configured: give --key, --policy or --insecure-allow-unsigned")
	}
	v, err := n.opts.Verifier.Verify(ctx, t, ref, res, req.Policy, req.AllowUnsigned)
	if err != nil {
		return nil, err
	}
	if v.Unsigned() {
		n.warnf("%s: accepting %s without a signature (--insecure-allow-unsigned)", name, ref)
	}
	if err := verityBefore(v, e); err != nil {
		return nil, fmt.Errorf("%s: %w", ref, err)
	}
	osr, osrPath, err := OSRelease(s.Options().Root)
	if err != nil {
		return nil, err
	}
	if e.Kind == oci.KindSysext {
		if err := n.compatible(e.Metadata, ref.String(), osr, osrPath); err != nil {
			return nil, err
		}
	}
	if n.opts.Preflighter != nil {
		if err := n.opts.Preflighter.Preflight(ctx, Plan{Name: name, Ref: ref, Entry: e, Root: s.Options().Root, Metadata: e.Metadata}); err != nil {
			return nil, fmt.Errorf("%s: preflight: %w", name, err)
		}
	}
	if err := s.CheckForeign(name, ""); err != nil && !s.Options().Copy {
		return nil, err
	}
	in := store.Install{
		Version:        e.Metadata.Version,
		Arch:           string(e.Metadata.Arch),
		ManifestDigest: e.Descriptor.Digest,
		LayerDigest:    e.Layer.Digest,
		ResolvedDigest: res.Root.Digest,
		Reference:      ref.WithDigest(e.Descriptor.Digest).String(),
		Size:           e.Layer.Size,
		InstalledAt:    n.opts.Now().UTC(),
	}
	var verityCert *x509.Certificate
	stored, found := s.Find(name, e.Layer.Digest)
	if found && !s.Options().Copy {
		in.File, in.ReleaseDigest = stored.File, stored.ReleaseDigest
		if in.Verity, verityCert, err = storedVerity(ctx, v, s.ImagePath(name, stored.File)); err != nil {
			return nil, fmt.Errorf("%s: %w: refusing it", ref, err)
		}
		if in.ReleaseDigest == "" {
			// Stored by a sysext that did not record it: read it now from
			// the write-once file (its layer digest was checked at commit).
			in.ReleaseDigest = releaseDigestOf(ctx, s.ImagePath(name, stored.File))
		}
		n.logf("%s: %s is already in the store", name, stored.File)
	} else {
		st, err := s.Stage(name)
		if err != nil {
			return nil, err
		}
		defer st.Abort()
		n.hook("download")
		n.logf("%s: downloading %s (%d bytes)", name, shortDigest(e.Layer.Digest), e.Layer.Size)
		dl, err := oci.Download(ctx, t, e, oci.DownloadOptions{Dir: st.Dir(), Progress: n.opts.Progress})
		if err != nil {
			return nil, fmt.Errorf("%s: download: %w", name, err)
		}
		result.Resumes = dl.Resumes
		n.hook("downloaded")
		if err := n.checkImage(name, e, dl, osr, osrPath, ref.String()); err != nil {
			return nil, err
		}
		if in.Verity, verityCert, err = verityOf(v, dl.Info); err != nil {
			return nil, fmt.Errorf("%s: %w: refusing it, nothing was changed", ref, err)
		}
		if err := n.protect(ctx, s, name, verityCert); err != nil {
			return nil, err
		}
		if dl.Info != nil {
			if in.Version == "" {
				in.Version = dl.Info.Meta.Version
			}
			if in.Arch == "" {
				in.Arch = string(dl.Info.Meta.Arch)
			}
			if dl.Info.ReleaseBytes != nil {
				// What activation proves the merged file against, byte for byte.
				in.ReleaseDigest = activate.ReleaseDigest(dl.Info.ReleaseBytes)
			}
		}
		if s.Options().Copy {
			if err := st.InstallCopy(v, filepath.Base(dl.Path), e.Descriptor.Digest, e.Layer.Digest); err != nil {
				return nil, err
			}
			result.Action, result.Changed, result.Version, result.File = "copied", true, in.Version, s.LinkPath(name)
			result.Signer, result.Unsigned = v.Signer(), v.Unsigned()
			describeVerity(result, in.Verity)
			return result, nil
		}
		file := e.FileName
		if e.Kind != oci.KindSysext || validStoreName(file) != nil {
			file = extension.FileName(name, orDefault(in.Version, shortDigest(e.Layer.Digest)), extension.Arch(orDefault(in.Arch, string(extension.AnyArch))))
		}
		if in.File, err = st.Commit(filepath.Base(dl.Path), file, e.Layer.Digest); err != nil {
			return nil, err
		}
	}
	if found && !s.Options().Copy {
		if err := n.protect(ctx, s, name, verityCert); err != nil {
			return nil, err
		}
	}
	result.Version, result.File = in.Version, in.File
	result.Signer, result.Unsigned = v.Signer(), v.Unsigned()
	describeVerity(result, in.Verity)
	meta := store.Meta{Source: req.Ref, Declared: req.Declared, Policy: req.Policy, AllowUnsigned: req.AllowUnsigned}
	if installed && req.Declared == "" {
		meta.Declared = cur.Declared
	}
	if err := s.Install(v, name, in, meta); err != nil {
		return nil, err
	}
	n.hook("installed")
	result.Changed = true
	result.Action = "pulled"
	if installed {
		result.Action = "updated"
	}
	var prev *store.Install
	if installed {
		p := cur.Active
		prev = &p
	}
	status, err := n.activate(ctx, s, name, in, prev)
	result.Activation = status
	if err != nil {
		result.Action = "failed"
		return result, err
	}
	return result, nil
}

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}

func validStoreName(file string) error {
	if err := extension.ValidateName(file); err != nil {
		return err
	}
	if filepath.Ext(file) != ".raw" {
		return fmt.Errorf("%s does not end in .raw", file)
	}
	return nil
}

// checkImage checks what the downloaded image says about itself: its name
// (for artifacts without our annotations, oci checked ours) and, when the
// manifest could not tell, its compatibility.
func (n *Node) checkImage(name string, e *oci.Entry, dl *oci.Downloaded, osr *extension.Release, osrPath, ref string) error {
	if dl.Info == nil {
		return fmt.Errorf("%s: %s: the image's metadata could not be read: refusing to activate it", name, ref)
	}
	if dl.Info.Name != "" && dl.Info.Name != name {
		return fmt.Errorf("%s: the image's metadata names extension %q (extension-release.%s), not %q: refusing to activate it as %s", ref, dl.Info.Name, dl.Info.Name, name, name)
	}
	if dl.Info.Name == "" {
		return fmt.Errorf("%s: the image has no usr/lib/extension-release.d/extension-release.%s: systemd would not merge it", ref, name)
	}
	if e.Kind != oci.KindSysext && dl.Info.Release != nil {
		meta := dl.Info.Meta
		meta.Name = name
		if err := n.compatible(meta, ref, osr, osrPath); err != nil {
			return err
		}
	}
	return nil
}

// linkOK reports whether NAME's link points at the active file.
func (n *Node) linkOK(s *store.Store, name string, e *store.Entry) bool {
	return s.LinkTargetIs(name, e.Active.File)
}
