package recipe

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/sysext/sysext/atomicfile"
	"github.com/sysext/sysext/internal/ctxio"
	"github.com/sysext/sysext/internal/extract"
)

// Fetcher downloads recipe files through an optional mirror into a cache
// keyed by sha256. Its zero value is not usable: CacheDir is required.
type Fetcher struct {
	CacheDir string       // blobs/sha256/HEX and urls/ live here
	Mirror   string       // "" or an http(s) base URL or a directory: https://HOST/PATH -> MIRROR/HOST/PATH
	Client   *http.Client // nil = a client that waits at most a minute for a response
	Progress io.Writer    // where a progress bar is drawn; nil = none
	Attempts int          // tries per download on a cut connection or 5xx; 0 = 3
	// MaxSize bounds the bytes an archive may unpack to (Unpacked); 0
	// derives the bound from the free space of the cache's filesystem.
	MaxSize int64
}

// ErrChecksum is returned when a download does not match its sha256.
var ErrChecksum = errors.New("checksum mismatch")

// ErrNoChecksum is returned when nothing says what a download's sha256 is.
var ErrNoChecksum = errors.New("no checksum")

// MaxChecksumFile bounds a checksum file we read.
const MaxChecksumFile = 4 << 20

// MirrorURL maps an upstream URL into the mirror: https://HOST/PATH becomes
// MIRROR/HOST/PATH. Without a mirror it returns u unchanged.
func MirrorURL(mirror, u string) (string, error) {
	if mirror == "" {
		return u, nil
	}
	pu, err := url.Parse(u)
	if err != nil || pu.Host == "" {
		return "", fmt.Errorf("%q is not a URL", u)
	}
	p := path.Clean("/" + pu.Path)
	if isURL(mirror) {
		out := strings.TrimRight(mirror, "/") + "/" + pu.Host + (&url.URL{Path: p}).EscapedPath()
		if pu.RawQuery != "" {
			out += "?" + pu.RawQuery
		}
		return out, nil
	}
	dir := strings.TrimPrefix(mirror, "file://")
	if strings.ContainsAny(pu.Host, `/\`) || pu.Host == ".." || pu.Host == "." {
		return "", fmt.Errorf("%q: host %q cannot be a directory name", u, pu.Host)
	}
	return filepath.Join(dir, pu.Host, filepath.FromSlash(p)), nil
}

func isURL(s string) bool { return strings.HasPrefix(s, "http://") || strings.HasPrefix(s, "https://") }

// defaultClient gives up on a server that does not answer within a minute;
// a download itself may take as long as it takes.
var defaultClient = sync.OnceValue(func() *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.ResponseHeaderTimeout = time.Minute
	return &http.Client{Transport: tr}
})

func (f *Fetcher) client() *http.Client {
	if f.Client != nil {
		return f.Client
	}
	return defaultClient()
}

// open returns a reader for u (through the mirror), its size (-1 when
// unknown) and where it reads from (see source). Its errors do not repeat
// that place: the caller names it once.
func (f *Fetcher) open(ctx context.Context, u string) (io.ReadCloser, int64, string, error) {
	src, err := MirrorURL(f.Mirror, u)
	if err != nil {
		return nil, 0, u, err
	}
	if !isURL(src) {
		fh, err := os.Open(src)
		if err != nil {
			var pe *os.PathError
			if errors.As(err, &pe) {
				err = pe.Err
			}
			return nil, 0, src, fmt.Errorf("not in the mirror directory: %w", err)
		}
		st, err := fh.Stat()
		if err != nil || !st.Mode().IsRegular() {
			fh.Close()
			return nil, 0, src, errors.New("not a regular file in the mirror directory")
		}
		return fh, st.Size(), src, nil
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, src, nil)
	if err != nil {
		return nil, 0, src, err
	}
	req.Header.Set("User-Agent", "sysext-bake")
	resp, err := f.client().Do(req)
	if err != nil {
		// *url.Error says `Get "URL": cause`; the URL is named by the caller.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, 0, src, err
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		return nil, 0, src, &statusError{resp.StatusCode, resp.Status}
	}
	return resp.Body, resp.ContentLength, src, nil
}

type statusError struct {
	code   int
	status string
}

func (e *statusError) Error() string { return "server answered " + e.status }

// retryable reports whether another attempt may succeed.
func retryable(err error) bool {
	var se *statusError
	if errors.As(err, &se) {
		return se.code >= 500 || se.code == http.StatusTooManyRequests
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrNotExist) {
		return false
	}
	return !errors.Is(err, ErrChecksum)
}

func (f *Fetcher) blobPath(sum string) string {
	return filepath.Join(f.CacheDir, "blobs", "sha256", sum)
}

func (f *Fetcher) urlIndex(u string) string {
	h := sha256.Sum256([]byte(u))
	return filepath.Join(f.CacheDir, "urls", hex.EncodeToString(h[:]))
}

// knownSum returns the sha256 a previous verified download of u had.
func (f *Fetcher) knownSum(u string) string {
	data, err := os.ReadFile(f.urlIndex(u))
	if err != nil {
		return ""
	}
	sum, rest, _ := strings.Cut(strings.TrimSpace(string(data)), " ")
	if !hexSum().MatchString(sum) || rest != u {
		return ""
	}
	return sum
}

// Fetch returns the path of d's content in the cache, downloading and
// verifying it first when it is not there. The cache holds only verified
// content; a failed download leaves nothing behind.
func (f *Fetcher) Fetch(ctx context.Context, d PlannedDownload) (string, error) {
	if f.CacheDir == "" {
		return "", errors.New("fetch: no cache directory")
	}
	sum := d.SHA256
	if sum == "" {
		// An earlier download of this exact URL was checked against the
		// upstream's checksum file; remembering the result lets a cached
		// bake work offline.
		sum = f.knownSum(d.URL)
	}
	if sum == "" && d.ChecksumURL != "" {
		var err error
		if sum, err = f.checksumFromFile(ctx, d); err != nil {
			return "", err
		}
	}
	if sum == "" {
		return "", fmt.Errorf("download %s (%s): %w: the recipe pins no sha256 for this version and architecture and names no checksum file: pass --sha256 %s=HEX", d.ID, d.URL, ErrNoChecksum, d.ID)
	}
	blob := f.blobPath(sum)
	if st, err := os.Stat(blob); err == nil && st.Mode().IsRegular() {
		return blob, nil
	}
	if err := os.MkdirAll(filepath.Dir(blob), 0o755); err != nil {
		return "", fmt.Errorf("cache: %w", err)
	}
	attempts := f.Attempts
	if attempts <= 0 {
		attempts = 3
	}
	var err error
	for i := 0; i < attempts; i++ {
		if i > 0 {
			select {
			case <-ctx.Done():
				return "", ctx.Err()
			case <-time.After(time.Duration(i) * 200 * time.Millisecond):
			}
		}
		if err = f.download(ctx, d, sum, blob); err == nil || !retryable(err) {
			break
		}
	}
	if err != nil {
		return "", err
	}
	if d.SHA256 == "" {
		// Best effort: the blob is verified and cached either way.
		_ = os.MkdirAll(filepath.Dir(f.urlIndex(d.URL)), 0o755)
		_ = atomicfile.WriteFile(f.urlIndex(d.URL), []byte(sum+" "+d.URL+"\n"), 0o644)
	}
	return blob, nil
}

// source names where a download comes from, once: the URL, or the mirror's
// copy and the URL it stands for.
func source(src, u string) string {
	if src == u || src == "" {
		return u
	}
	return src + " (mirror of " + u + ")"
}

func (f *Fetcher) download(ctx context.Context, d PlannedDownload, sum, blob string) error {
	body, size, src, err := f.open(ctx, d.URL)
	if err != nil {
		return fmt.Errorf("download %s: %s: %w", d.ID, source(src, d.URL), err)
	}
	defer body.Close()
	tmp, err := atomicfile.Create(blob, 0o644)
	if err != nil {
		return fmt.Errorf("cache: %w", err)
	}
	defer tmp.Close()
	h := sha256.New()
	var w io.Writer = io.MultiWriter(tmp, h)
	if f.Progress != nil {
		bar := progressbar.NewOptions64(size,
			progressbar.OptionSetWriter(f.Progress),
			progressbar.OptionSetDescription(d.ID),
			progressbar.OptionShowBytes(true),
			progressbar.OptionThrottle(100*time.Millisecond),
			progressbar.OptionClearOnFinish())
		defer bar.Finish()
		w = io.MultiWriter(w, bar)
	}
	n, err := io.Copy(w, ctxio.Reader(ctx, body))
	if err == nil && size >= 0 && n != size {
		err = io.ErrUnexpectedEOF
	}
	if err != nil {
		if size >= 0 {
			return fmt.Errorf("download %s: %s: cut after %d of %d bytes: %w", d.ID, source(src, d.URL), n, size, err)
		}
		return fmt.Errorf("download %s: %s: cut after %d bytes: %w", d.ID, source(src, d.URL), n, err)
	}
	got := hex.EncodeToString(h.Sum(nil))
	if got != sum {
		return fmt.Errorf("download %s: %s: %w: got sha256 %s, want %s; nothing was kept", d.ID, source(src, d.URL), ErrChecksum, got, sum)
	}
	if err := tmp.Commit(true); err != nil {
		return fmt.Errorf("cache: %w", err)
	}
	return nil
}

var bsdLine = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^SHA256 \((.+)\) = ([0-9a-fA-F]{64})$`) })

// checksumFromFile fetches the upstream's checksum file and picks d's entry.
func (f *Fetcher) checksumFromFile(ctx context.Context, d PlannedDownload) (string, error) {
	var data []byte
	var err error
	src := ""
	for i := 0; i < 3; i++ {
		if data, src, err = f.small(ctx, d.ChecksumURL); err == nil || !retryable(err) {
			break
		}
	}
	if err != nil {
		return "", fmt.Errorf("download %s: checksum file %s: %w", d.ID, source(src, d.ChecksumURL), err)
	}
	sum, err := ParseChecksumFile(data, d.ChecksumEntry)
	if err != nil {
		return "", fmt.Errorf("download %s: checksum file %s: %w", d.ID, source(src, d.ChecksumURL), err)
	}
	return sum, nil
}

// small reads a checksum file; it returns where it read from, which its
// errors do not repeat.
func (f *Fetcher) small(ctx context.Context, u string) ([]byte, string, error) {
	body, _, src, err := f.open(ctx, u)
	if err != nil {
		return nil, src, err
	}
	defer body.Close()
	data, err := io.ReadAll(io.LimitReader(ctxio.Reader(ctx, body), MaxChecksumFile+1))
	if err != nil {
		return nil, src, err
	}
	if len(data) > MaxChecksumFile {
		return nil, src, fmt.Errorf("more than %d bytes: not a checksum file", MaxChecksumFile)
	}
	return data, src, nil
}

// ParseChecksumFile finds entry's sha256 in a checksum file: a lone hex
// digest, sha256sum(1) lines ("HEX  NAME", "HEX *NAME", "./NAME" too), or
// BSD lines ("SHA256 (NAME) = HEX").
func ParseChecksumFile(data []byte, entry string) (string, error) {
	var lone []string
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64<<10), MaxChecksumFile)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if m := bsdLine().FindStringSubmatch(line); m != nil {
			if sameEntry(m[1], entry) {
				return strings.ToLower(m[2]), nil
			}
			continue
		}
		fields := strings.Fields(line)
		sum := strings.ToLower(fields[0])
		if !hexSum().MatchString(sum) {
			continue
		}
		if len(fields) == 1 {
			lone = append(lone, sum)
			continue
		}
		if sameEntry(strings.Join(fields[1:], " "), entry) {
			return sum, nil
		}
	}
	if len(lone) == 1 {
		return lone[0], nil
	}
	return "", fmt.Errorf("%w: no sha256 for %q in it", ErrNoChecksum, entry)
}

func sameEntry(name, entry string) bool {
	name = strings.TrimPrefix(name, "*")
	name = strings.TrimPrefix(name, "./")
	return name == entry || path.Base(name) == entry
}

// Unpacked returns a directory holding the verified archive blob (whose
// sha256 is sum) unpacked: CACHE/trees/sha256/SUM, made once, atomically
// (unpacked into a temp directory, then renamed). Bakes from the cache then
// hard-link files from it instead of decompressing again. Nothing ever
// writes to a file in it after the rename.
func (f *Fetcher) Unpacked(ctx context.Context, blob, sum, format string) (string, error) {
	final := filepath.Join(f.CacheDir, "trees", "sha256", sum)
	if st, err := os.Stat(final); err == nil && st.IsDir() {
		return final, nil
	}
	if err := os.MkdirAll(filepath.Dir(final), 0o755); err != nil {
		return "", fmt.Errorf("cache: %w", err)
	}
	tmp, err := os.MkdirTemp(filepath.Dir(final), atomicfile.TempPrefix+sum+".")
	if err != nil {
		return "", fmt.Errorf("cache: %w", err)
	}
	budget, err := extract.NewBudget(f.MaxSize, tmp)
	if err == nil {
		err = unpack(ctx, blob, format, tmp, budget)
	}
	if err != nil {
		os.RemoveAll(tmp)
		return "", err
	}
	if err := os.Chmod(tmp, 0o755); err != nil {
		os.RemoveAll(tmp)
		return "", err
	}
	if err := os.Rename(tmp, final); err != nil {
		os.RemoveAll(tmp)
		if st, serr := os.Stat(final); serr == nil && st.IsDir() {
			return final, nil // another bake unpacked it first
		}
		return "", fmt.Errorf("cache: %w", err)
	}
	_ = atomicfile.SyncDir(filepath.Dir(final))
	return final, nil
}
