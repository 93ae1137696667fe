package node

import (
	"bytes"
	"context"
	"fmt"
	"slices"

	"github.com/sysext/sysext/fsimage"
	"github.com/sysext/sysext/oci"
)

// An EROFS image's compressors must each be in the node's kernel
// (activate's preflight judges them). push names them in the manifest's
// annotation; a manifest without it (pushed before it existed, or by
// another tool) is judged by the image's own superblock: read ahead with
// one Range request when the media type says EROFS, and always from the
// downloaded file before it is kept or activated.

// preflightPlan is what the preflight judges of p before the download.
// An EROFS layer whose manifest does not name its compressors has its
// superblock read ahead; p remembers what was judged (preflightFile).
func (n *Node) preflightPlan(ctx context.Context, p *pullPlan) Plan {
	e := &p.res.Entry
	plan := Plan{Name: p.name, Ref: p.ref, Entry: e, Root: n.opts.Store.Root, Metadata: e.Metadata, Format: layerFormat(e)}
	if plan.Format == fsimage.EROFS {
		plan.Compression = layerCompression(e)
		if _, named := e.Manifest.Annotations[oci.AnnotationCompression]; !named {
			plan.Compression = n.compressorsAhead(ctx, p)
		}
	}
	p.judgedFormat, p.judgedCompression = plan.Format, plan.Compression
	return plan
}

// compressorsAhead reads the compressors of p's EROFS image from its
// superblock, fetched alone with one Range request (through mirrors, of
// the first source that has it). nil when that is not possible (a source
// that ignores Range, a blob that is not what its media type says): the
// downloaded file is judged then.
func (n *Node) compressorsAhead(ctx context.Context, p *pullPlan) []string {
	e := &p.res.Entry
	head, err := oci.FetchHead(ctx, p.t, e.Layer, fsimage.ErofsHeadSize)
	if err == nil {
		p.headRead = int64(len(head))
		var algs []string
		if algs, err = fsimage.ErofsCompressors(bytes.NewReader(head)); err == nil {
			return algs
		}
	}
	if ctx.Err() == nil {
		n.logf("%s: the manifest does not name the EROFS compressors of %s and its superblock could not be read ahead (%v): they are checked once it is downloaded", p.name, p.ref, err)
	}
	return nil
}

// preflightFile asks the preflight again about the downloaded image info
// (checked against its digest, not yet committed) when its EROFS
// compressors were not all judged before the download: the manifest did
// not name them and the superblock could not be read ahead, the media
// type named no filesystem, or an annotation left one out. A refusal
// leaves the active version as it was; the caller's ingest is removed.
func (n *Node) preflightFile(ctx context.Context, p *pullPlan, info *fsimage.Info) error {
	if n.opts.Preflighter == nil || info == nil || info.Format != fsimage.EROFS {
		return nil
	}
	if p.judgedFormat == fsimage.EROFS && judgedAll(p.judgedCompression, info.Compression) {
		return nil
	}
	e := &p.res.Entry
	plan := Plan{Name: p.name, Ref: p.ref, Entry: e, Root: n.opts.Store.Root, Metadata: e.Metadata,
		Format: info.Format, Compression: info.Compression, Downloaded: true}
	if err := n.opts.Preflighter.Preflight(ctx, plan); err != nil {
		return fmt.Errorf("%s: preflight of the downloaded image: %w", p.name, err)
	}
	return nil
}

// preflightStored is preflightFile for an image the store holds already
// (stored by an earlier pull, not active now): its superblock is read
// when the preflight before did not judge its compressors from the
// manifest. An image that cannot be read is left to activation's proof.
func (n *Node) preflightStored(ctx context.Context, p *pullPlan, path string) error {
	if n.opts.Preflighter == nil || p.judgedFormat != "" && p.judgedFormat != fsimage.EROFS {
		return nil
	}
	if _, named := p.res.Entry.Manifest.Annotations[oci.AnnotationCompression]; named {
		return nil
	}
	info, err := fsimage.OpenMetadata(ctx, path)
	if err != nil {
		return nil
	}
	return n.preflightFile(ctx, p, info)
}

// judgedAll reports whether every compressor of the file was judged.
func judgedAll(judged, file []string) bool {
	for _, alg := range file {
		if !slices.Contains(judged, alg) {
			return false
		}
	}
	return true
}
