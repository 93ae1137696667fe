package node

import (
	"cmp"
	"context"
	"crypto/x509"
	"fmt"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/sysext/sysext/activate"
	"github.com/sysext/sysext/delta"
	"github.com/sysext/sysext/extension"
	"github.com/sysext/sysext/fsimage"
	"github.com/sysext/sysext/oci"
	"github.com/sysext/sysext/store"
	"github.com/sysext/sysext/verify"
)

// PullRequest says what to pull.
type PullRequest struct {
	Ref           string      // host/repo:tag, @sha256:..., oci:PATH[:tag]
	Name          string      // expected extension name ("" = from the manifest)
	Trust         store.Trust // the extension's own trust, recorded for updates (zero: the command line's)
	AllowUnsigned bool        // --insecure-allow-unsigned
	Declared      string      // the extensions.d file that declared it (sync)
	// PolicyFrom is "FILE:LINE" of the declaration's Policy= (sync); with
	// Declared set, Trust's paths are inside the root.
	PolicyFrom string
	// DryRun checks everything a pull checks (resolve, the name, the
	// signature, compatibility, the preflight, a foreign file in the way)
	// and stops before the download: nothing is written. The result's
	// action is would-pull or would-update.
	DryRun bool
}

// trust is what req's signatures are checked with: a declared policy is
// read inside the root, and its errors name the declaration.
func (req PullRequest) trust() Trust {
	tr := Trust{Recorded: req.Trust, AllowUnsigned: req.AllowUnsigned}
	if req.Declared != "" {
		tr.From = cmp.Or(req.PolicyFrom, req.Declared)
	}
	return tr
}

// Result says what one extension's operation did.
type Result struct {
	Name       string                     `json:"name"`
	Version    string                     `json:"version,omitempty"`
	From       string                     `json:"from,omitempty"` // the version active before
	Digest     string                     `json:"digest,omitempty"`
	Source     string                     `json:"source,omitempty"`
	Signer     string                     `json:"signer,omitempty"`
	Unsigned   bool                       `json:"unsigned,omitempty"`
	File       string                     `json:"file,omitempty"`
	Changed    bool                       `json:"changed"`
	Action     string                     `json:"action"` // pulled, updated, unchanged, would-update, rolled-back, removed, failed, ...
	Activation extension.ActivationStatus `json:"activation,omitempty"`
	Resumes    int                        `json:"resumes,omitempty"`
	// Downloaded is how many bytes the pull fetched for the image (its
	// chunk index included), Reused how many of its bytes it did not:
	// found in stored images (a delta download) or held by an
	// interrupted download it resumed.
	Downloaded int64  `json:"downloaded,omitempty"`
	Reused     int64  `json:"reused,omitempty"`
	Error      string `json:"error,omitempty"`
	// Sources says, when the registry configuration names mirrors, which
	// source answered each read (tag, manifests, layer, signatures) and
	// which failed first.
	Sources []oci.SourceEvent `json:"sources,omitempty"`
	// A disk image's dm-verity root hash and the trusted certificate that
	// signed it (node/verity.go).
	VerityRootHash string `json:"verity_root_hash,omitempty"`
	VeritySigner   string `json:"verity_signer,omitempty"`
}

// Changes reports whether r changed the node, or would have without
// --dry-run: what makes update and sync succeed rather than find nothing
// to do.
func (r Result) Changes() bool {
	switch r.Action {
	case "would-pull", "would-update", "would-remove":
		return true
	}
	return r.Changed
}

// Pull resolves, verifies, checks, stores and activates one extension.
// With Options.Store.Copy it writes the image itself into the extensions
// directory instead (store.Copier), for baking an OS image.
func (n *Node) Pull(ctx context.Context, req PullRequest) (*Result, error) {
	if err := n.precheck(req); err != nil {
		return nil, err
	}
	if n.opts.Store.Copy {
		c, err := store.OpenCopy(ctx, n.opts.Store)
		if err != nil {
			return nil, err
		}
		defer c.Close()
		return n.pullCopy(ctx, c, req, nil)
	}
	s, err := n.open(ctx)
	if err != nil {
		return nil, err
	}
	defer s.Close()
	n.resume(ctx, s, false)
	return n.pull(ctx, s, s, req, nil)
}

// resolvedRef is a reference update resolved already: root is what its
// tag pointed to, so the tag is not asked twice.
type resolvedRef struct {
	t    oci.Target
	ref  oci.Reference
	root ocispec.Descriptor
	body []byte // root's bytes, when the tag check had them
}

// pullPlan is what a pull has decided before it stores anything.
type pullPlan struct {
	t    oci.Target
	ref  oci.Reference
	res  *oci.Resolved
	name string
	// cur is the installed entry of name (nil when none): a lower version
	// is refused (checkDowngrade).
	cur *store.Entry
	// Set by admit.
	v       verify.Verified
	osr     *extension.Release
	osrPath string
	// Delta downloads (delta.go): the store the chunks come from, the
	// chunk index lookup started before admit, and the index a delta
	// download succeeded with (kept next to the image).
	store      *store.Store
	delta      *deltaLookup
	deltaIndex *delta.Index
	// early is the chunk index lookup plan started from the index's
	// entry (nil when none): startDelta uses it for that manifest only;
	// earlyVerify is the signature check started so (admit).
	early       *oci.ChunkIndexLookup
	earlyVerify *earlyVerify
	// Set by admit's preflight (erofscomp.go): the format and EROFS
	// compressors it judged, and the bytes of the image read ahead.
	judgedFormat      fsimage.Format
	judgedCompression []string
	headRead          int64
	// Set by put: the trusted certificate that signed a disk image's root
	// hash (nil when the policy names none), for protect.
	verityCert *x509.Certificate
}

// pull is Pull's work on an open store. inst is where the image goes: s
// itself (tests wrap it to count the calls). From the decision to download
// to the link switch it enters the store three times: inst.Ingest,
// Ingest.Commit, inst.Install (see store/doc.go).
func (n *Node) pull(ctx context.Context, s *store.Store, inst store.Installer, req PullRequest, pre *resolvedRef) (result *Result, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var cut *sourceCut
	if pre != nil && !req.DryRun {
		// update: the tag moved, a download follows; the stored images
		// are cut while the new build is resolved.
		cut = n.startCutEarly(ctx, s, req.Name)
	}
	defer func() { cancel(); cut.release() }()
	// The signatures, and the chunk index when a delta download could
	// follow, are looked for from the index's entry as its manifest is
	// read.
	// (With no stored image to take chunks from, an index is only looked
	// for to be kept, once the image is admitted: startDelta.)
	p, err := n.plan(ctx, req, pre, earlyStarts{chunkIndex: !req.DryRun && !n.opts.NoDelta && len(s.StoredImages(req.Name)) > 0, active: s.ActiveManifest})
	if err != nil {
		return nil, err
	}
	defer p.stopEarly()
	e, name := &p.res.Entry, p.name
	result = &Result{Name: name, Version: e.Metadata.Version, Digest: e.Descriptor.Digest.String(), Source: req.Ref}
	defer func() {
		if result != nil {
			result.Sources = oci.SourceEvents(p.t)
		}
	}()
	cur, installed := s.Entry(name)
	if installed {
		result.From = cur.Active.Version
		p.cur = cur
	}
	// Already active: a fast no-op (the active image was verified when it
	// was installed).
	if installed && cur.Active.ManifestDigest == e.Descriptor.Digest && n.linkOK(s, name, cur) {
		result.Action, result.Version, result.File = "unchanged", cur.Active.Version, cur.Active.File
		if !req.DryRun && (cur.Active.ResolvedDigest != p.res.Root.Digest || cur.Source != req.Ref) {
			if err := s.Touch(name, req.Ref, p.res.Root.Digest); err != nil {
				return nil, err
			}
		}
		return result, nil
	}
	if installed && e.Kind == oci.KindSysext {
		// Decided from the manifest, before anything is verified or fetched.
		if err := n.checkDowngrade(name, cur, e.Metadata.Version, p.ref.String()); err != nil {
			return nil, err
		}
	}
	if !req.DryRun {
		// The chunk index is looked for while the signatures are checked.
		n.startDelta(ctx, s, p, cut)
		// The stored images stay open until the download is done.
		defer func() { cancel(); p.delta.release() }()
	}
	if retry, err := n.admit(ctx, p, req); retry {
		// A mirror's answer for the tag did not verify: from the next source.
		p.stopEarly()
		return n.pull(ctx, s, inst, req, &resolvedRef{t: p.t, ref: p.ref})
	} else if err != nil {
		return nil, err
	}
	result.Downloaded += p.headRead
	p.delta.startKeepOnly(ctx, p)
	if req.DryRun {
		// Install would refuse a file of that name sysext did not install.
		if err := s.CheckForeign(name); err != nil {
			return nil, err
		}
		result.Action = "would-pull"
		if installed {
			result.Action = "would-update"
		}
		return result, nil
	}
	in, err := n.put(ctx, inst, p, result)
	if err != nil {
		return nil, err
	}
	if err := n.protect(ctx, s.Options().Root, s.Options().ExtensionsDir, unsignedOthers(s, name), name, p.verityCert); err != nil {
		return nil, err
	}
	result.Version, result.File = in.Version, in.File
	result.Signer, result.Unsigned = p.v.Signer(), p.v.Unsigned()
	describeVerity(result, in.Verity)
	meta := store.Meta{Source: req.Ref, Declared: req.Declared, Trust: req.Trust, AllowUnsigned: req.AllowUnsigned}
	if installed && req.Declared == "" {
		meta.Declared = cur.Declared
	}
	if err := inst.Install(p.v, name, in, meta); err != nil {
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

// pullCopy is Pull in copy mode: the same checks, then the image file
// itself in the extensions directory; nothing is activated.
func (n *Node) pullCopy(ctx context.Context, c *store.Copier, req PullRequest, pre *resolvedRef) (*Result, error) {
	p, err := n.plan(ctx, req, pre, earlyStarts{})
	if err != nil {
		return nil, err
	}
	defer p.stopEarly()
	e, name := &p.res.Entry, p.name
	result := &Result{Name: name, Version: e.Metadata.Version, Digest: e.Descriptor.Digest.String(), Source: req.Ref}
	if retry, err := n.admit(ctx, p, req); retry {
		p.stopEarly()
		return n.pullCopy(ctx, c, req, &resolvedRef{t: p.t, ref: p.ref})
	} else if err != nil {
		return nil, err
	}
	result.Downloaded += p.headRead
	in, err := n.put(ctx, c, p, result)
	if err != nil {
		return nil, err
	}
	if err := n.protect(ctx, n.opts.Store.Root, n.opts.Store.ExtensionsDir, nil, name, p.verityCert); err != nil {
		return nil, err
	}
	meta := store.Meta{Source: req.Ref, Declared: req.Declared, Trust: req.Trust, AllowUnsigned: req.AllowUnsigned}
	if err := c.Install(p.v, name, in, meta); err != nil {
		return nil, err
	}
	result.Action, result.Changed, result.Version, result.File = "copied", true, in.Version, c.LinkPath(name)
	result.Signer, result.Unsigned = p.v.Signer(), p.v.Unsigned()
	result.Sources = oci.SourceEvents(p.t)
	describeVerity(result, in.Verity)
	return result, nil
}

// earlyStarts says what plan starts from the digest an index names for
// the manifest, while it reads the manifest.
type earlyStarts struct {
	// chunkIndex: the chunk index lookup (a delta download may follow).
	chunkIndex bool
	// active, when set, reports whether a manifest is an installed
	// extension's active one: then nothing is started (the pull is most
	// likely a no-op, and its lookups would be wasted requests).
	active func(digest.Digest) bool
}

// plan resolves the reference (from the root update resolved, when pre is
// set) and decides the extension's name. While it reads the manifest an
// index names, it starts checking its signatures and, as early says,
// looking for its chunk index (p.earlyVerify, p.early; stopped when plan
// fails).
func (n *Node) plan(ctx context.Context, req PullRequest, pre *resolvedRef, early earlyStarts) (_ *pullPlan, err error) {
	p := &pullPlan{}
	defer func() {
		if err != nil {
			p.stopEarly()
		}
	}()
	var root ocispec.Descriptor
	var rootBody []byte
	if pre != nil {
		p.t, p.ref, root, rootBody = pre.t, pre.ref, pre.root, pre.body
	} else {
		r, err := oci.ParseReference(req.Ref)
		if err != nil {
			return nil, err
		}
		p.ref = r
		if p.t, err = n.openRef(ctx, p.ref); err != nil {
			return nil, err
		}
	}
	if req.Name != "" {
		if err := extension.ValidateName(req.Name); err != nil {
			return nil, fmt.Errorf("--name: %w", err)
		}
	}
	n.hook("resolve")
	// An index's signature is checked before more than a few of its
	// manifests are read: a crafted index cannot fan out unverified.
	verifyIndex := func(ctx context.Context, idx ocispec.Descriptor) error {
		if n.opts.Verifier == nil {
			return errNoVerifier
		}
		_, err := n.opts.Verifier.Verify(ctx, p.t, p.ref, &oci.Resolved{Ref: p.ref, Root: idx, Entry: oci.Entry{Descriptor: idx}}, req.trust())
		return err
	}
	ro := oci.ResolveOptions{Root: root, RootBody: rootBody, VerifyIndex: verifyIndex}
	ro.Reading = func(r *oci.Resolved) {
		// The signatures and the chunk index are looked for by the digest
		// the index names while the manifest is read; admit and startDelta
		// use what they find only for the manifest resolved.
		if early.active != nil && early.active(r.Descriptor.Digest) {
			return
		}
		p.earlyVerify = n.startVerify(ctx, p, r, req.trust())
		if early.chunkIndex {
			p.early = oci.StartChunkIndex(ctx, p.t, r.Descriptor)
		}
	}
	res, err := oci.ResolveWith(ctx, p.t, p.ref, n.arch(), ro)
	if err != nil {
		return nil, err
	}
	p.res = res
	e := &res.Entry
	name := req.Name
	switch {
	case e.Kind == oci.KindSysext && name != "" && e.Metadata.Name != name:
		return nil, fmt.Errorf("%s: the manifest is for extension %q, not %q: check the reference or --name", p.ref, e.Metadata.Name, name)
	case e.Kind == oci.KindSysext:
		name = e.Metadata.Name
	case name == "":
		return nil, fmt.Errorf("%s: the artifact carries no sysext annotations (%s), so its extension name is unknown: give --name NAME", p.ref, e.Kind)
	}
	p.name = name
	return p, nil
}

// admit applies the trust policy, systemd's compatibility rules against
// the target root's os-release and the preflight, all before anything is
// downloaded. retry says a mirror's answer for the tag did not verify and
// the plan should be made again from the next source.
func (n *Node) admit(ctx context.Context, p *pullPlan, req PullRequest) (retry bool, err error) {
	e, name := &p.res.Entry, p.name
	n.hook("verify")
	if n.opts.Verifier == nil {
		return false, errNoVerifier
	}
	v, retry, err := n.verifyPlan(ctx, p, req.trust())
	if retry || err != nil {
		return retry, err
	}
	if v.Unsigned() {
		n.warnf("%s: accepting %s without a signature (--insecure-allow-unsigned)", name, p.ref)
	}
	if err := verityBefore(v, e); err != nil {
		return false, fmt.Errorf("%s: %w", p.ref, err)
	}
	p.v = v
	root := n.opts.Store.Root
	if p.osr, p.osrPath, err = OSRelease(root); err != nil {
		return false, err
	}
	if e.Kind == oci.KindSysext {
		if err := n.compatible(e.Metadata, p.ref.String(), p.osr, p.osrPath); err != nil {
			return false, err
		}
	}
	if n.opts.Preflighter != nil {
		if err := n.opts.Preflighter.Preflight(ctx, n.preflightPlan(ctx, p)); err != nil {
			return false, fmt.Errorf("%s: preflight: %w", name, err)
		}
	}
	return false, nil
}

// put gets the image into inst: Ingest (the image may be stored already,
// or partly downloaded by an earlier run, which is resumed), download into
// the ingest, check what the image says about itself, Commit. It returns
// the install record for inst.Install.
func (n *Node) put(ctx context.Context, inst store.Installer, p *pullPlan, result *Result) (store.Install, error) {
	e, name := &p.res.Entry, p.name
	in := store.Install{
		Version:        e.Metadata.Version,
		Arch:           string(e.Metadata.Arch),
		ManifestDigest: e.Descriptor.Digest,
		LayerDigest:    e.Layer.Digest,
		ResolvedDigest: p.res.Root.Digest,
		Reference:      p.ref.WithDigest(e.Descriptor.Digest).String(),
		Size:           e.Layer.Size,
		InstalledAt:    n.opts.Now().UTC(),
	}
	ing, err := inst.Ingest(ctx, name, e.Layer)
	if err != nil {
		return in, err
	}
	defer func() { ing.Close() }() // keeps a partial download for the next run
	if stored, ok := ing.Stored(); ok {
		in.File, in.ReleaseDigest = stored.File, stored.ReleaseDigest
		if in.Verity, p.verityCert, err = storedVerity(ctx, p.v, ing.Name()); err != nil {
			return in, fmt.Errorf("%s: %w: refusing it", p.ref, err)
		}
		if err := n.preflightStored(ctx, p, ing.Name()); err != nil {
			return in, err
		}
		if in.ReleaseDigest == "" {
			// Stored by a sysext that did not record it: read it now from
			// the write-once file (its layer digest was checked at commit).
			in.ReleaseDigest = releaseDigestOf(ctx, ing.Name())
		}
		n.logf("%s: %s is already in the store", name, stored.File)
		return in, nil
	}
	n.hook("download")
	var dl *oci.Downloaded
	if p.delta != nil && !p.delta.keepOnly {
		if dl, ing, err = n.tryDelta(ctx, inst, p, ing, result); err != nil {
			return in, fmt.Errorf("%s: download: %w", name, err)
		}
	}
	if dl == nil {
		if off := ing.Offset(); off > 0 {
			n.logf("%s: resuming the download of %s at %d of %d bytes", name, extension.ShortDigest(string(e.Layer.Digest)), off, e.Layer.Size)
		} else {
			n.logf("%s: downloading %s (%d bytes)", name, extension.ShortDigest(string(e.Layer.Digest)), e.Layer.Size)
		}
		dl, err = oci.Download(ctx, p.t, e, oci.DownloadOptions{Into: ing, Progress: n.opts.Progress})
		for attempt := 1; err != nil && attempt < oci.MaxMirrorRestarts && oci.RetryElsewhere(p.t, err); attempt++ {
			// A mirror served bytes that do not match: they are dropped
			// (oci said so in one line), and the image comes again from
			// the other sources.
			ing.Close()
			if ing, err = inst.Ingest(ctx, name, e.Layer); err != nil {
				return in, err
			}
			dl, err = oci.Download(ctx, p.t, e, oci.DownloadOptions{Into: ing, Progress: n.opts.Progress})
		}
		if err != nil {
			return in, fmt.Errorf("%s: download: %w", name, err)
		}
		result.Downloaded += dl.Fetched
		result.Reused += dl.Reused
	}
	result.Resumes = dl.Resumes
	n.hook("downloaded")
	if err := n.checkImage(name, e, dl, p.osr, p.osrPath, p.ref.String()); err != nil {
		return in, err
	}
	if err := n.preflightFile(ctx, p, dl.Info); err != nil {
		return in, err
	}
	if in.Verity, p.verityCert, err = verityOf(p.v, dl.Info); err != nil {
		return in, fmt.Errorf("%s: %w: refusing it, nothing was changed", p.ref, err)
	}
	if dl.Info != nil {
		if in.Version == "" {
			in.Version = dl.Info.Meta.Version
			// Without our annotations the version is known only now.
			if p.cur != nil {
				if err := n.checkDowngrade(name, p.cur, in.Version, p.ref.String()); err != nil {
					return in, err
				}
			}
		}
		if in.Arch == "" {
			in.Arch = string(dl.Info.Meta.Arch)
		}
		if dl.Info.ReleaseBytes != nil {
			// What activation proves the merged file against, byte for byte.
			in.ReleaseDigest = activate.ReleaseDigest(dl.Info.ReleaseBytes)
		}
	}
	file := e.FileName
	if e.Kind != oci.KindSysext || extension.ValidateImageFile(file) != nil {
		file = extension.FileName(name, cmp.Or(in.Version, extension.ShortDigest(string(e.Layer.Digest))), extension.Arch(cmp.Or(in.Arch, string(extension.AnyArch))))
	}
	if in.File, err = ing.Commit(ctx, e.Layer.Size, e.Layer.Digest, file); err != nil {
		return in, err
	}
	n.keepIndex(ctx, p, in.File)
	if p.delta != nil && p.delta.keepOnly {
		result.Downloaded += p.delta.read
	}
	return in, nil
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
