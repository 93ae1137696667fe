package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/sysext/sysext/oci"
)

// registryFlags are the connection flags of every command that talks to a
// registry.
type registryFlags struct {
	PlainHTTP bool
	Insecure  bool
}

func (f *registryFlags) addFlags(c *cobra.Command) {
	c.Flags().BoolVar(&f.PlainHTTP, "plain-http", false, "use HTTP instead of HTTPS (automatic for loopback registries)")
	c.Flags().BoolVar(&f.Insecure, "insecure", false, "do not verify the registry's TLS certificate")
}

func (f registryFlags) options() oci.Options {
	return oci.Options{PlainHTTP: f.PlainHTTP, Insecure: f.Insecure, UserAgent: "sysext/" + version}
}

// openReference parses s (oci.ErrInvalidReference, exit 2, when
// malformed) and opens its store.
func openReference(ctx context.Context, s string, f registryFlags, create bool) (oci.Reference, oci.Target, error) {
	ref, err := oci.ParseReference(s)
	if err != nil {
		return ref, nil, err
	}
	o := f.options()
	o.CreateLayout = create
	t, err := oci.Open(ctx, ref, o)
	if err != nil {
		return ref, nil, err
	}
	return ref, t, nil
}

// layoutCleanup returns what removes the OCI layout directory s names when
// it does not exist yet, for a command that creates it and then fails: a
// failed copy or push leaves no empty layout behind. For a registry, an
// existing directory or a malformed reference it does nothing.
func layoutCleanup(s string) func() {
	ref, err := oci.ParseReference(s)
	if err != nil || !ref.IsLayout() {
		return func() {}
	}
	if _, err := os.Lstat(ref.Layout); !errors.Is(err, fs.ErrNotExist) {
		return func() {}
	}
	return func() { os.RemoveAll(ref.Layout) }
}

// outputFlags are --json and -q.
type outputFlags struct {
	JSON  bool
	Quiet bool
}

func (f *outputFlags) addFlags(c *cobra.Command) {
	c.Flags().BoolVar(&f.JSON, "json", false, "print the result as JSON")
	c.Flags().BoolVarP(&f.Quiet, "quiet", "q", false, "print only the result, no progress")
}

// progress shows transfers on stderr: a bar on a terminal, a few plain
// lines otherwise, nothing with -q or --json.
type progress struct {
	mu    sync.Mutex
	w     io.Writer
	tty   bool
	off   bool
	bars  map[string]*progressbar.ProgressBar
	lines map[string]int // last quarter printed per name
	// reused is what a delta download found in stored images, per name:
	// its progress counts only the bytes fetched, so the line says both.
	reused  map[string]int64
	pending map[string]int64 // reused, told before the transfer it belongs to starts
	totals  map[string]int64 // the total each name's bar or lines were made for
}

func newProgress(c *cobra.Command, out outputFlags) *progress {
	w := c.ErrOrStderr()
	tty := false
	if f, ok := w.(*os.File); ok {
		tty = term.IsTerminal(int(f.Fd()))
	}
	return &progress{w: w, tty: tty, off: out.Quiet || out.JSON, bars: map[string]*progressbar.ProgressBar{}, lines: map[string]int{}, reused: map[string]int64{}, pending: map[string]int64{}, totals: map[string]int64{}}
}

// update reports done of total bytes for name.
func (p *progress) update(name string, done, total int64) {
	if p == nil || p.off {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	label := filepath.Base(name)
	if t, ok := p.totals[name]; !ok || t != total {
		// A new transfer under this name (the next extension, or a delta
		// that fell back to the whole image): a new bar, new lines.
		if b, ok := p.bars[name]; ok {
			_ = b.Finish()
		}
		delete(p.bars, name)
		delete(p.lines, name)
		p.reused[name] = p.pending[name]
		delete(p.pending, name)
	}
	p.totals[name] = total
	if r := p.reused[name]; r > 0 {
		label += fmt.Sprintf(" (+%s reused)", humanSize(r))
	}
	if p.tty {
		b, ok := p.bars[name]
		if !ok {
			b = progressbar.NewOptions64(total,
				progressbar.OptionSetWriter(p.w),
				progressbar.OptionSetDescription(label),
				progressbar.OptionShowBytes(true),
				progressbar.OptionUseIECUnits(true),
				progressbar.OptionThrottle(100*time.Millisecond),
				progressbar.OptionSetWidth(30),
				progressbar.OptionOnCompletion(func() { fmt.Fprintln(p.w) }),
			)
			p.bars[name] = b
		}
		_ = b.Set64(done)
		return
	}
	q := 4
	if total > 0 {
		q = int(done * 4 / total)
	}
	last, ok := p.lines[name]
	if !ok {
		fmt.Fprintf(p.w, "%s: %s\n", label, humanSize(total))
		p.lines[name] = 0
		last = 0
	}
	if q > last {
		fmt.Fprintf(p.w, "%s: %d%%\n", label, q*25)
		p.lines[name] = q
	}
}

// reusedFunc is told how much of name's image a delta download found in
// stored images, before its progress starts.
func (p *progress) reusedFunc(name string) func(int64) {
	if p == nil || p.off {
		return nil
	}
	return func(reused int64) {
		p.mu.Lock()
		defer p.mu.Unlock()
		p.pending[name] = reused
	}
}

// fileFunc adapts update to oci.ProgressFunc for one name.
func (p *progress) fileFunc(name string) oci.ProgressFunc {
	if p == nil || p.off {
		return nil
	}
	return func(done, total int64) { p.update(name, done, total) }
}
