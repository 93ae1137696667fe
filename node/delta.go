package node

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/sysext/sysext/delta"
	"github.com/sysext/sysext/extension"
	"github.com/sysext/sysext/oci"
	"github.com/sysext/sysext/store"
)

// Delta downloads (issue 15, docs/format.md "Chunk index"): when the store
// holds images, a pull looks for the new image's chunk index while it
// verifies, takes the chunks it holds from the stored images and fetches
// the rest with Range requests; the store's ingest checks the whole file's
// digest as for any download. Whatever goes wrong on that path, the pull
// says so in one line and downloads the whole image.

// deltaLookup is the chunk index lookup a pull starts before it verifies,
// and the stored images it would take chunks from, cut with the format's
// chunker at the same time (the cutting, up to a few hundred ms for an
// image that has no kept index, overlaps the round trips).
type deltaLookup struct {
	done chan struct{}
	ix   *delta.Index
	read int64 // bytes of index (and referrer manifest) fetched
	err  error
	cut  *sourceCut
	// keepOnly: the store holds no image to take chunks from; the index
	// is looked for only to be kept next to the image downloaded whole,
	// so the next update need not cut it. cancel stops that lookup.
	keepOnly bool
	cancel   context.CancelFunc
	// failed: a delta download by ix failed (its chunks may be what was
	// wrong): ix is not kept.
	failed bool
}

// release waits for the stored images to be cut and closes them; a pull
// calls it once it is done with the download, whatever happened.
func (l *deltaLookup) release() {
	if l != nil {
		if l.cancel != nil { // started
			l.cancel()
			<-l.done
		}
		l.cut.release()
	}
}

// sourceCut is the stored images of one extension being cut into chunks
// in the background.
type sourceCut struct {
	name string
	done chan struct{}
	set  *sourceSet
	once sync.Once
}

func (c *sourceCut) release() {
	if c == nil {
		return
	}
	c.once.Do(func() {
		<-c.done
		c.set.close()
	})
}

// startCut starts cutting imgs, NAME's first, for a delta download of
// NAME (skipping e's image when e is known).
func (n *Node) startCut(ctx context.Context, s *store.Store, imgs []store.StoredImage, name string, e *oci.Entry) *sourceCut {
	c := &sourceCut{name: name, done: make(chan struct{})}
	go func() {
		defer close(c.done)
		c.set = n.deltaSources(ctx, s, imgs, name, e, delta.Default)
	}()
	return c
}

// startCutEarly starts cutting NAME's stored images before the new image
// is resolved, when a pull of it is sure to download (update: the tag
// moved): the cutting then overlaps every round trip. nil when no delta
// download is possible.
func (n *Node) startCutEarly(ctx context.Context, s *store.Store, name string) *sourceCut {
	if n.opts.NoDelta || s == nil || name == "" {
		return nil
	}
	imgs := s.StoredImages(name)
	if len(imgs) == 0 {
		return nil
	}
	return n.startCut(ctx, s, imgs, name, nil)
}

// startDelta starts looking for the chunk index of p's image when delta
// downloads are on and the store does not hold this image under this name
// (then nothing is downloaded at all). The lookup's round trips overlap
// the signature checks, and so does cutting the stored images (started
// already when cut is set). When the store holds no image, the image is
// downloaded whole and the index, if found (waited for a short while
// after the download: publishedIndex), kept next to it (keepIndex): the
// next update need not cut it.
func (n *Node) startDelta(ctx context.Context, s *store.Store, p *pullPlan, cut *sourceCut) {
	early := p.early
	if n.opts.NoDelta || s == nil {
		early.Stop()
		return
	}
	imgs := s.StoredImages(p.name)
	for _, im := range imgs {
		if im.Name == p.name && im.LayerDigest == p.res.Layer.Digest {
			early.Stop()
			return
		}
	}
	l := &deltaLookup{done: make(chan struct{}), cut: cut, keepOnly: len(imgs) == 0}
	p.delta, p.store = l, s
	if l.keepOnly {
		// Nothing to cut and no hurry: the lookup starts once the image
		// is admitted (startKeepOnly), beside its whole download, so a
		// build refused by the trust policy or systemd's rules costs no
		// request for its index.
		early.Stop()
		return
	}
	l.start(ctx, p, early)
	if cut == nil || cut.name != p.name {
		l.cut = n.startCut(ctx, s, imgs, p.name, &p.res.Entry)
	}
}

// start looks for p's chunk index in the background: from early (the
// lookup started from the index's entry) when it names the manifest
// resolved, else afresh.
func (l *deltaLookup) start(ctx context.Context, p *pullPlan, early *oci.ChunkIndexLookup) {
	lctx, cancel := context.WithCancel(ctx)
	l.cancel = cancel
	go func() {
		ctx := lctx
		defer close(l.done)
		if early != nil {
			// Started from the index's entry: used only when the manifest
			// resolved is the one it named.
			l.ix, l.read, l.err = early.Result(ctx, &p.res.Entry)
			if !errors.Is(l.err, oci.ErrOtherManifest) {
				return
			}
		}
		var read int64
		l.ix, read, l.err = oci.FindChunkIndex(ctx, p.t, &p.res.Entry)
		l.read += read
	}()
}

// startKeepOnly starts the lookup of an index to keep next to an image
// downloaded whole into a store that held none (see startDelta).
func (l *deltaLookup) startKeepOnly(ctx context.Context, p *pullPlan) {
	if l != nil && l.keepOnly && l.cancel == nil {
		l.start(ctx, p, nil)
	}
}

// errNotWorth stops a delta download whose plan takes nothing from the
// stored images: the whole image streams better.
var errNotWorth = errors.New("none of its chunks is in the stored images")

// tryDelta downloads p's image into ing as a delta. It returns nil (and
// the ingest to download the whole image into) when the delta path is not
// taken or failed: a failed delta's ingest is discarded and a fresh one
// returned, so nothing it wrote survives. An error only when the pull
// itself must stop (cancelled: the ingest is kept for the next run).
func (n *Node) tryDelta(ctx context.Context, inst store.Installer, p *pullPlan, ing *store.Ingest, result *Result) (*oci.Downloaded, *store.Ingest, error) {
	l, e, name := p.delta, &p.res.Entry, p.name
	select {
	case <-l.done:
	case <-ctx.Done():
		return nil, ing, ctx.Err()
	}
	result.Downloaded += l.read
	if l.err != nil {
		if errors.Is(l.err, oci.ErrNoChunkIndex) {
			n.logf("%s: no chunk index is published for %s: downloading the whole image", name, extension.ShortDigest(string(e.Descriptor.Digest)))
		} else {
			n.logf("%s: delta download not possible (%v): downloading the whole image", name, l.err)
		}
		return nil, ing, nil
	}
	select {
	case <-l.cut.done:
	case <-ctx.Done():
		return nil, ing, ctx.Err()
	}
	set := l.cut.set
	if !l.ix.Same(set.chunker) {
		// An index cut another way (a later format): cut the stored
		// images that way too.
		set = n.deltaSources(ctx, p.store, p.store.StoredImages(name), name, e, l.ix.Chunker)
		defer set.close()
	}
	set.report(n)
	srcs, imgs := set.srcs, set.imgs
	if len(srcs) == 0 {
		return nil, ing, nil
	}
	dl, err := oci.DownloadDelta(ctx, p.t, e, oci.DeltaOptions{
		Into:     ing,
		Index:    l.ix,
		Sources:  srcs,
		Progress: n.opts.Progress,
		Planned: func(pl *delta.Plan) error {
			if pl.Reused == 0 && pl.Held == 0 {
				// (Chunks an interrupted delta download wrote count: the
				// local ones are written first.)
				return errNotWorth
			}
			if n.opts.Reused != nil {
				n.opts.Reused(pl.Reused)
			}
			n.logf("%s: delta download of %s (%s): %s to fetch in %d ranges, %s found in %d stored images%s", name, extension.ShortDigest(string(e.Layer.Digest)), mib(e.Layer.Size), mib(pl.Fetched), len(pl.Ranges), mib(pl.Reused), len(srcs), resumedPart(pl.Held))
			return nil
		},
	})
	if err == nil {
		p.deltaIndex = l.ix
		result.Downloaded += dl.Fetched
		result.Reused += dl.Reused
		return dl, ing, nil
	}
	switch {
	case ctx.Err() != nil:
		return nil, ing, err // interrupted: the checked chunks stay for the next run
	case errors.Is(err, errNotWorth):
		n.logf("%s: %s: downloading the whole image", name, err)
		return nil, ing, nil
	}
	var lc *oci.LocalChunkError
	if errors.As(err, &lc) {
		// Its kept index (or the image) is damaged: made again next time.
		_ = p.store.RemoveChunkIndex(imgs[lc.Source].Name, imgs[lc.Source].File)
	}
	l.failed = true
	n.logf("%s: delta download failed (%v): downloading the whole image", name, err)
	if derr := ing.Discard(); derr != nil {
		return nil, ing, derr
	}
	fresh, ierr := inst.Ingest(ctx, name, e.Layer)
	if ierr != nil {
		return nil, nil, ierr
	}
	return nil, fresh, nil
}

func resumedPart(held int64) string {
	if held == 0 {
		return ""
	}
	return fmt.Sprintf(", %s from the interrupted download", mib(held))
}

// sourceSet is the stored images a delta download takes chunks from,
// open, with their chunk indexes, and what was found on the way (said
// later, by the pull's goroutine).
type sourceSet struct {
	chunker    delta.Chunker
	srcs       []oci.DeltaSource
	imgs       []store.StoredImage
	files      []*os.File
	warns, log []string
}

func (ss *sourceSet) close() {
	if ss == nil {
		return
	}
	for _, f := range ss.files {
		f.Close()
	}
	ss.files = nil
}

// report says what was found while the images were cut, once.
func (ss *sourceSet) report(n *Node) {
	for _, w := range ss.warns {
		n.warnf("%s", w)
	}
	for _, l := range ss.log {
		n.logf("%s", l)
	}
	ss.warns, ss.log = nil, nil
}

// deltaSources opens the stored images imgs (NAME's first) with their
// chunk indexes: the kept one when it is for that image and chunker, else
// one made now (and kept). An image that cannot be read, or whose bytes
// do not match its recorded digest, is left out with a warning; so is
// e's own image under NAME, when e is known. It runs
// beside the pull's goroutine: it only collects what it has to say.
func (n *Node) deltaSources(ctx context.Context, s *store.Store, imgs []store.StoredImage, name string, e *oci.Entry, c delta.Chunker) *sourceSet {
	ss := &sourceSet{chunker: c}
	for _, im := range imgs {
		if ctx.Err() != nil {
			break
		}
		if e != nil && im.LayerDigest == e.Layer.Digest && im.Name == name {
			continue
		}
		f, err := os.Open(im.Path)
		if err != nil {
			ss.warns = append(ss.warns, fmt.Sprintf("%s: %s cannot be read for a delta download: %v", im.Name, im.File, err))
			continue
		}
		ix, err := storedIndex(ctx, s, im, f, c, ss)
		if err != nil {
			f.Close()
			ss.warns = append(ss.warns, fmt.Sprintf("%s: %s: %v", im.Name, im.File, err))
			continue
		}
		ss.files = append(ss.files, f)
		ss.srcs = append(ss.srcs, oci.DeltaSource{Name: im.Path, File: f, Index: ix})
		ss.imgs = append(ss.imgs, im)
	}
	return ss
}

// storedIndex returns the chunk index of a stored image: the kept one, or
// one made now from the file (whose digest must be the recorded one) and
// kept for next time.
func storedIndex(ctx context.Context, s *store.Store, im store.StoredImage, f *os.File, c delta.Chunker, ss *sourceSet) (*delta.Index, error) {
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if b, err := s.ReadChunkIndex(im.Name, im.File); err == nil && b != nil {
		if ix, err := delta.Parse(b); err == nil && ix.Same(c) && ix.Check(fi.Size(), im.LayerDigest.String()) == nil {
			return ix, nil
		}
	}
	ix, err := delta.BuildAt(ctxReaderAt{ctx, f}, fi.Size(), c)
	if err != nil {
		return nil, fmt.Errorf("chunk index: %w", err)
	}
	if got := ix.DigestString(); got != im.LayerDigest.String() {
		return nil, fmt.Errorf("the stored image's bytes do not match its digest %s (got %s): it is damaged; 'sysext pull' it again", im.LayerDigest, got)
	}
	if b, err := ix.MarshalBinary(); err == nil {
		if err := s.WriteChunkIndex(im.Name, im.File, b); err != nil {
			ss.log = append(ss.log, fmt.Sprintf("%s: %v", im.Name, err))
		}
	}
	return ix, nil
}

// keepIndexWait bounds how long a pull that downloaded an image whole
// waits, once it is stored, for the lookup of its published chunk index:
// the lookup is a few small requests, started beside the download, and
// without the index the next update cuts the stored image (0.1-0.25 s of
// CPU for 27 MiB) before it can take chunks from it.
const keepIndexWait = 2 * time.Second

// keepIndex keeps the chunk index a delta download was assembled by next
// to the stored image: every chunk of it was checked, and so was the
// whole file. After a whole download it keeps the published index
// (publishedIndex).
func (n *Node) keepIndex(ctx context.Context, p *pullPlan, file string) {
	if p.store == nil {
		return
	}
	ix := p.deltaIndex
	if ix == nil {
		ix = n.publishedIndex(ctx, p)
	}
	if ix == nil {
		return
	}
	b, err := ix.MarshalBinary()
	if err == nil {
		err = p.store.WriteChunkIndex(p.name, file, b)
	}
	if err != nil {
		n.logf("%s: %v", p.name, err)
	}
}

// publishedIndex returns, for an image downloaded whole and checked, the
// chunk index its publisher attached, when the lookup finds one: a lookup
// still running when the download ended is waited for, at most
// keepIndexWait and while ctx lasts, then cancelled (nothing kept, as
// when it fails). FindChunkIndex checked that it is for this layer
// (digest and size); its chunks are checked when a delta download takes
// them (copyLocal: each against the new image's index, and the whole
// file), so an index that lies costs at most a fallback to the whole
// image then.
func (n *Node) publishedIndex(ctx context.Context, p *pullPlan) *delta.Index {
	l := p.delta
	if l == nil || l.cancel == nil { // none, or never started
		return nil
	}
	select {
	case <-l.done:
	default:
		n.hook("chunk-index-wait")
		timer := time.NewTimer(keepIndexWait)
		defer timer.Stop()
		select {
		case <-l.done:
		case <-timer.C:
		case <-ctx.Done():
		}
		l.cancel()
		<-l.done
	}
	if l.err != nil || l.failed {
		return nil
	}
	return l.ix
}

// ctxReaderAt fails reads once ctx is done.
type ctxReaderAt struct {
	ctx context.Context
	f   *os.File
}

func (c ctxReaderAt) ReadAt(p []byte, off int64) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.f.ReadAt(p, off)
}

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }
