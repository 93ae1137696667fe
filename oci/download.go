package oci

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/registry/remote"

	"github.com/sysext/sysext/atomicfile"
	"github.com/sysext/sysext/extension"
	"github.com/sysext/sysext/fsimage"
	"github.com/sysext/sysext/ingest"
)

// ProgressFunc is told how many bytes of total are done; it is called from
// the transferring goroutine, at most every chunk.
type ProgressFunc func(done, total int64)

// Writer is where Download puts a layer when DownloadOptions.Into is set:
// the store's ingest (store.Ingest) is one; package ingest has the
// mechanics. Download calls WriteAt from its writing stage and HashAt, with
// the same bytes, from its hashing stage: concurrently, each in offset
// order.
type Writer interface {
	io.WriterAt
	// HashAt is handed the bytes WriteAt gets, for the digest.
	HashAt(p []byte, off int64)
	// Offset is where the layer goes on: the bytes before it are written
	// and hashed already (a resumed ingest) and are not fetched again.
	Offset() int64
	// Sum ends the writing and returns the digest of the whole file.
	Sum(ctx context.Context) (digest.Digest, error)
	// Name is the file, read for the image's metadata after Sum.
	Name() string
}

// DownloadOptions say where the image goes.
type DownloadOptions struct {
	// Into, when set, receives the layer: Download streams into it, checks
	// the result as it checks a file, and leaves committing it to the
	// caller. Path, Dir and Replace are then not used.
	Into Writer
	// Path is the file to create. "" means Dir/FileName of the entry.
	Path string
	// Dir is the directory for the default name (Path == "").
	Dir string
	// Replace an existing file; by default an existing file is an error
	// and is left alone.
	Replace bool
	// MaxResumes bounds how often a cut transfer is resumed with an HTTP
	// Range request (default 5; negative means never).
	MaxResumes int
	// Progress, when set, is called as bytes arrive.
	Progress ProgressFunc
	// Concurrency bounds the parallel Range requests a large download
	// from a registry may use when one connection is slower than the link
	// (default 8; 1: always one connection).
	Concurrency int

	// progress is the parallel ranges' share of Progress: bytes added.
	progress func(n int64)
	// rangedOnly: the stream hands over only when its answer says the
	// source serves ranges (a mirror's).
	rangedOnly bool
}

// Downloaded describes the image file Download committed (or, with Into,
// checked and left to the caller).
type Downloaded struct {
	Path    string
	Size    int64
	Digest  digest.Digest // the layer digest, checked over the bytes written
	Resumes int           // how often a cut transfer was resumed
	// Reused is how many bytes of the image were not fetched: Into held
	// them already (a resumed ingest) or, for DownloadDelta, they came
	// from images the node holds.
	Reused int64
	// Fetched is how many bytes of the image came from the store (for
	// DownloadDelta: the ranges, the bytes between merged chunks included).
	Fetched int64
	// Info is what the image says about itself (format, extension-release).
	Info *fsimage.Info
}

// Download streams e's layer from t into a temp file next to the target
// (or into opts.Into), hashing while it streams (one pass), resuming with
// an HTTP Range request when the connection is cut, then checks size and
// digest, the content's magic (squashfs, EROFS or a GPT disk image) and,
// for our format, that the image's extension-release agrees with the
// manifest annotations; only then it fsyncs and renames into place. On any
// failure nothing is left at the target or next to it, and the temp files
// of downloads killed earlier in that directory are removed.
func Download(ctx context.Context, t content.Fetcher, e *Entry, opts DownloadOptions) (*Downloaded, error) {
	layer := e.Layer
	if err := layer.Digest.Validate(); err != nil {
		return nil, fmt.Errorf("layer digest %q: %w", layer.Digest, err)
	}
	if layer.Digest.Algorithm() != digest.SHA256 {
		return nil, fmt.Errorf("layer %s: only sha256 digests are supported", layer.Digest)
	}
	if opts.Into != nil {
		return download(ctx, t, e, opts.Into, opts)
	}
	target := opts.Path
	if target == "" {
		if err := extension.ValidateFileName(e.FileName); err != nil {
			return nil, fmt.Errorf("layer %s: %w", e.Layer.Digest, err)
		}
		dir := opts.Dir
		if dir == "" {
			dir = "."
		}
		target = filepath.Join(dir, e.FileName)
	}
	if !opts.Replace {
		if _, err := os.Lstat(target); err == nil {
			return nil, sentinel(os.ErrExist, "%s already exists: remove it or choose another directory", target)
		}
	}
	// A download killed earlier (SIGKILL, power loss) left its temp file
	// here; a live one holds its file locked and keeps it.
	_, _ = atomicfile.RemoveStale(filepath.Dir(target))
	for attempt := 1; ; attempt++ {
		res, err := downloadFile(ctx, t, e, target, opts)
		// A mirror's wrong bytes: start again, from the other sources.
		if err != nil && attempt < MaxMirrorRestarts && RetryElsewhere(t, err) {
			continue
		}
		return res, err
	}
}

// MaxMirrorRestarts bounds how often a download through mirrors starts
// again after bytes that did not match the digest.
const MaxMirrorRestarts = 4

// downloadFile is one attempt of Download into a new temp file.
func downloadFile(ctx context.Context, t content.Fetcher, e *Entry, target string, opts DownloadOptions) (*Downloaded, error) {
	layer := e.Layer
	f, err := atomicfile.Create(target, 0o644)
	if err != nil {
		return nil, err
	}
	defer f.Close() // removes the temp file unless committed
	w, err := ingest.New(f.File, layer.Size, layer.Digest)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", target, err)
	}
	defer w.Close()
	res, err := download(ctx, t, e, w, opts)
	if err != nil {
		return nil, err
	}
	if err := f.Commit(opts.Replace); err != nil {
		return nil, err
	}
	res.Path = target
	if res.Info != nil {
		res.Info.Path = target
	}
	return res, nil
}

// streamHoles reports whether the ranges missing are what a stream that
// was stopped leaves: the rest of the blob and, before it, the holes of the
// few writes it had in flight (they finish out of order). The stream then
// goes on from the first hole and writes those few MiB again, rather than
// fetching them as parallel ranges.
func streamHoles(missing []ingest.Range, size int64) bool {
	if len(missing) < 2 || missing[len(missing)-1].End != size {
		return false
	}
	return missing[len(missing)-1].Off-missing[0].Off <= streamBuffers*streamBufSize
}

// stoppedParallel reports whether missing is what a stopped parallel
// download leaves (parts written out of order), to be fetched as ranges
// rather than streamed from the first hole on.
func stoppedParallel(missing []ingest.Range, size int64) bool {
	return !streamHoles(missing, size) && (len(missing) > 1 || len(missing) == 1 && missing[0].End != size)
}

func missingBytes(missing []ingest.Range) int64 {
	var n int64
	for _, m := range missing {
		n += m.End - m.Off
	}
	return n
}

func toRanges(missing []ingest.Range) []Range {
	rs := make([]Range, len(missing))
	for i, m := range missing {
		rs[i] = Range{m.Off, m.End - m.Off}
	}
	return rs
}

// mayGoParallel says whether a stream of layer from start on may hand over
// to parallel ranges: enough is left and more than one connection allowed.
func mayGoParallel(layer ocispec.Descriptor, start int64, opts DownloadOptions) bool {
	return opts.Concurrency != 1 && layer.Size-start >= parallelTuning.minRest
}

// restFunc fetches ranges of the layer in parallel once a stream handed
// them over, starting from the stream's rate; it hashes from when hashFrom
// closes (the stream is done).
type restFunc func(ctx context.Context, rs []Range, rate float64, hashFrom <-chan struct{}) (int, error)

// streamThenRest streams the layer from start on from t into w; the stream
// may hand the rest over to rest, whose parallel ranges start at once and
// hash from when the stream is done. handed says it did. A failed stream
// stops the rest.
func streamThenRest(ctx context.Context, t content.Fetcher, layer ocispec.Descriptor, w rangeWriter, start int64, opts DownloadOptions, rest restFunc) (resumes int, handed bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	streamDone := make(chan struct{})
	var restErr chan error
	var restResumes int
	resumes, err = stream(ctx, t, layer, w, start, opts, func(end int64, rate float64) {
		restErr = make(chan error, 1)
		go func() {
			var err error
			restResumes, err = rest(ctx, []Range{{end, layer.Size - end}}, rate, streamDone)
			restErr <- err
		}()
	})
	close(streamDone)
	if err != nil {
		cancel()
	}
	if restErr != nil {
		if rerr := <-restErr; err == nil {
			err = rerr
		}
		resumes += restResumes
	}
	return resumes, restErr != nil, err
}

// closed is a channel that is closed: nothing to wait for.
var closed = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// download streams the layer into w and checks what w holds. A Writer that
// knows its ranges (an ingest) gets, after a stopped parallel download,
// only the parts it lacks; and a large download may go on in parallel
// ranges (parallel.go).
func download(ctx context.Context, t content.Fetcher, e *Entry, w Writer, opts DownloadOptions) (*Downloaded, error) {
	layer := e.Layer
	reused := w.Offset()
	var resumes int
	var err error
	// Through mirrors, each source is streamed in turn (mirror.go).
	mt, mirrored := t.(*mirrorTarget)
	var used []*source
	rw, ranged := w.(rangeWriter)
	var missing []ingest.Range
	if ranged {
		missing = rw.Missing()
	}
	_, registry := t.(*remote.Repository)
	// One count of the bytes done for Progress, whichever goroutine adds
	// them: the stream reports where it is, the parallel ranges what they
	// added.
	if report := opts.Progress; report != nil {
		var mu sync.Mutex
		done, streamAt := reused, reused
		opts.progress = func(n int64) {
			mu.Lock()
			done += n
			report(done, layer.Size)
			mu.Unlock()
		}
		opts.Progress = func(at, _ int64) {
			mu.Lock()
			done += at - streamAt
			streamAt = at
			report(done, layer.Size)
			mu.Unlock()
		}
	}
	switch {
	case mirrored:
		if stoppedParallel(missing, layer.Size) {
			reused = layer.Size - missingBytes(missing)
		}
		resumes, used, err = mt.download(ctx, layer, w, opts)
	case stoppedParallel(missing, layer.Size):
		// A parallel download stopped: what arrived out of order stays.
		reused = layer.Size - missingBytes(missing)
		resumes, err = fetchRest(ctx, t, layer, rw, toRanges(missing), 0, opts, closed)
	case ranged && registry && mayGoParallel(layer, reused, opts):
		resumes, _, err = streamThenRest(ctx, t, layer, rw, reused, opts, func(ctx context.Context, rs []Range, rate float64, hashFrom <-chan struct{}) (int, error) {
			return fetchRest(ctx, t, layer, rw, rs, rate, opts, hashFrom)
		})
	default:
		resumes, err = stream(ctx, t, layer, w, reused, opts, nil)
	}
	if err != nil {
		return nil, err
	}
	var wrong func(digest.Digest) error
	if mirrored {
		wrong = func(got digest.Digest) error { return mt.wrongLayer(layer, got, used) }
	}
	res, err := checkWritten(ctx, e, w, wrong)
	if err != nil {
		return nil, err
	}
	res.Resumes, res.Reused, res.Fetched = resumes, reused, layer.Size-reused
	return res, nil
}

// checkWritten checks what w holds once every byte is written: the digest
// of the whole, the content's magic against the media type, and what the
// image says about itself against the manifest. wrong, when set, makes
// the error for bytes that do not match the digest (a mirror's).
func checkWritten(ctx context.Context, e *Entry, w Writer, wrong func(got digest.Digest) error) (*Downloaded, error) {
	layer := e.Layer
	got, err := w.Sum(ctx)
	if err != nil {
		return nil, fmt.Errorf("layer %s: %w", layer.Digest, err)
	}
	if got != layer.Digest {
		if wrong != nil {
			return nil, wrong(got)
		}
		return nil, sentinel(ErrDigestMismatch, "layer %s: the bytes received do not match the digest (got %s): the store is corrupt or was tampered with", layer.Digest, got)
	}
	head, err := readHead(w.Name())
	if err != nil {
		return nil, fmt.Errorf("layer %s: %w", layer.Digest, err)
	}
	format, err := fsimage.DetectBytes(head)
	if err != nil {
		return nil, fmt.Errorf("layer %s: the content %w: refusing to keep it", layer.Digest, err)
	}
	if e.Kind == KindSysext {
		if mt, _ := LayerMediaType(string(format)); mt != layer.MediaType {
			return nil, fmt.Errorf("layer %s: the content is %s but the media type says %s", layer.Digest, format, layer.MediaType)
		}
	}
	info, err := checkImage(ctx, w.Name(), format, e)
	if err != nil {
		return nil, fmt.Errorf("layer %s: %w", layer.Digest, err)
	}
	res := &Downloaded{Path: w.Name(), Size: layer.Size, Digest: got}
	if info != nil {
		info.Path = w.Name()
		info.Digest = layer.Digest.String()
		info.Size = layer.Size
	}
	res.Info = info
	return res, nil
}

// readHead reads the start of the image for the magic check (GPT's header
// sits at 512 or 4096).
func readHead(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	head := make([]byte, headSize)
	n, err := io.ReadFull(f, head)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return head[:n], nil
}
