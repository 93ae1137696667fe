package deltabench

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// MeasureOptions says where Measure works and what it measures.
type MeasureOptions struct {
	// Work is the scratch directory: the Go builds, trees, images and
	// zstd patches are kept there and reused by the next run.
	Work string
	// Variants to measure; nil means all of Variants.
	Variants []Variant
	// Logf, when set, receives progress lines.
	Logf func(format string, args ...any)
}

// Measure builds the workload and reports, as Markdown, what each delta
// design would download per image variant and update case, with link
// estimates (issue 15's research). A first run takes tens of minutes and
// a few GB in opts.Work (`go run ./internal/deltabench/deltameasure`).
func Measure(ctx context.Context, opts MeasureOptions) ([]byte, error) {
	work := opts.Work
	if work == "" {
		return nil, fmt.Errorf("no work directory: give one for the builds, images and patches")
	}
	logf := opts.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}
	variants := opts.Variants
	if variants == nil {
		variants = Variants
	}
	v0, v1, v2, vo, other := Workload()
	rels := map[string]Release{"v0": v0, "v1": v1, "v2": v2, "vo": vo, "other": other}
	trees := map[string]string{}
	for _, k := range []string{"v0", "v1", "v2", "vo", "other"} {
		trees[k] = filepath.Join(work, "tree", k)
		if _, err := os.Stat(trees[k]); err == nil {
			continue
		}
		logf("building tree %s", k)
		if err := BuildTree(ctx, work, trees[k], rels[k]); err != nil {
			return nil, err
		}
	}
	zv, err := ZstdVersion(ctx)
	if err != nil {
		return nil, fmt.Errorf("zstd --version: %w (install zstd)", err)
	}
	var rep report
	rep.printf("# Delta measurement\n\n%s; %s\n\n", time.Now().UTC().Format(time.RFC3339), zv)
	rep.treeTable(trees)
	for _, p := range [][2]string{{"v1", "v2"}, {"v1", "vo"}, {"v0", "v2"}} {
		names, size, err := ChangedFiles(trees[p[0]], trees[p[1]])
		if err != nil {
			return nil, err
		}
		rep.printf("changed files %s→%s: %d bytes in %d files: %s\n\n", p[0], p[1], size, len(names), strings.Join(names, ", "))
	}
	m := &measurer{ctx: ctx, logf: logf, work: work, rels: rels, trees: trees, chunks: map[string][]Chunk{}}
	for _, v := range variants {
		if err := m.variant(&rep, v); err != nil {
			return nil, fmt.Errorf("%s: %w", v.Label, err)
		}
	}
	rep.printf("\n## Link estimates (100 Mbit/s, RTT 40 ms)\n\n%s", m.times.String())
	return rep.Bytes(), nil
}

type report struct{ bytes.Buffer }

func (r *report) printf(format string, args ...any) { fmt.Fprintf(&r.Buffer, format, args...) }

func (r *report) treeTable(trees map[string]string) {
	r.printf("| tree | files | bytes |\n|---|---|---|\n")
	for _, k := range []string{"v0", "v1", "v2", "vo", "other"} {
		n, size := 0, int64(0)
		_ = filepath.Walk(trees[k], func(p string, fi os.FileInfo, err error) error {
			if err == nil && fi.Mode().IsRegular() {
				n++
				size += fi.Size()
			}
			return nil
		})
		r.printf("| %s | %d | %d |\n", k, n, size)
	}
	r.printf("\n")
}

type measurer struct {
	ctx    context.Context
	logf   func(string, ...any)
	work   string
	rels   map[string]Release
	trees  map[string]string
	chunks map[string][]Chunk
	times  bytes.Buffer
}

// image builds (once) and returns the path of release k's image in v.
func (m *measurer) image(v Variant, k string) (string, error) {
	p := filepath.Join(m.work, "img", v.Key(), k+".raw")
	if _, err := os.Stat(p); err == nil {
		return p, nil
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return "", err
	}
	m.logf("%s: building %s", v.Label, k)
	start := time.Now()
	tmp := p + ".tmp"
	if err := BuildImage(m.ctx, v, m.trees[k], tmp, m.rels[k], m.work); err != nil {
		return "", err
	}
	_ = os.WriteFile(p+".time", []byte(time.Since(start).String()), 0o644)
	return p, os.Rename(tmp, p)
}

// cdc returns (once) the chunks of the image at p.
func (m *measurer) cdc(p string, data []byte, avg int) ([]Chunk, error) {
	k := fmt.Sprint(p, avg)
	if c, ok := m.chunks[k]; ok {
		return c, nil
	}
	c, err := NewCDC(avg)
	if err != nil {
		return nil, err
	}
	cs := c.Chunks(data)
	m.chunks[k] = cs
	return cs, nil
}

// patch returns (once) the zstd --patch-from size of old → new.
func (m *measurer) patch(v Variant, oldK, newK string) (int64, error) {
	out := filepath.Join(m.work, "patch", v.Key(), oldK+"-"+newK+".zst")
	if fi, err := os.Stat(out); err == nil {
		return fi.Size(), nil
	}
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return 0, err
	}
	old, err := m.image(v, oldK)
	if err != nil {
		return 0, err
	}
	new, err := m.image(v, newK)
	if err != nil {
		return 0, err
	}
	m.logf("%s: zstd patch %s→%s", v.Label, oldK, newK)
	n, took, err := Patch(m.ctx, old, new, out+".tmp")
	if err != nil {
		return 0, err
	}
	_ = os.WriteFile(out+".time", []byte(took.String()), 0o644)
	return n, os.Rename(out+".tmp", out)
}

type updateCase struct {
	name  string
	olds  []string
	new   string
	patch bool // a single old image: zstd --patch-from applies
	all   bool // measured for every variant, not only the defaults
}

var cases = []updateCase{
	{"update v1→v2", []string{"v1"}, "v2", true, true},
	{"version only v1→v1'", []string{"v1"}, "vo", true, true},
	{"two behind v0→v2", []string{"v0"}, "v2", true, false},
	{"store v0+v1 → v2", []string{"v0", "v1"}, "v2", false, false},
	{"first install, store has ocitools", []string{"other"}, "v2", false, false},
}

var (
	avgs    = []int{4 << 10, 8 << 10, 16 << 10, 32 << 10, 64 << 10}
	gaps    = []int64{0, 64 << 10, 256 << 10}
	fixed   = []int{4 << 10, 64 << 10, 128 << 10}
	rolling = []int{4 << 10, 16 << 10, 64 << 10}
	// 100 Mbit/s of Ethernet carries 1448 bytes of TCP payload per
	// 1514-byte frame: tbf at 100mbit gave 11.2-11.8 MB/s to curl here.
	testLink  = Link{Bandwidth: 100e6 / 8 * 1448 / 1514, RTT: 40 * time.Millisecond}
	conns     = []int{1, 4, 8}
	mib       = func(n int64) string { return fmt.Sprintf("%.2f", float64(n)/(1<<20)) }
	isDefault = func(v Variant) bool { return strings.Contains(v.Label, "(default)") }
)

func (m *measurer) variant(rep *report, v Variant) error {
	imgs := map[string]string{}
	data := map[string][]byte{}
	for _, k := range []string{"v0", "v1", "v2", "vo", "other"} {
		if !isDefault(v) && (k == "v0" || k == "other") {
			continue
		}
		p, err := m.image(v, k)
		if err != nil {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		imgs[k], data[k] = p, b
	}
	defer clear(m.chunks)
	if v.SameAs != "" {
		i := slices.IndexFunc(Variants, func(o Variant) bool { return o.Label == v.SameAs })
		if i < 0 {
			return fmt.Errorf("SameAs %q names no variant", v.SameAs)
		}
		p, err := m.image(Variants[i], "v1")
		if err != nil {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if !bytes.Equal(b, data["v1"]) {
			return fmt.Errorf("the tool run directly does not give the builder's bytes (%s): the measured tool options would not be the builder's", v.SameAs)
		}
	}
	rep.printf("\n## %s\n\n", v.Label)
	rep.printf("images: v1 %s MiB, v2 %s MiB, v1' %s MiB (%d, %d, %d bytes)", mib(int64(len(data["v1"]))), mib(int64(len(data["v2"]))),
		mib(int64(len(data["vo"]))), len(data["v1"]), len(data["v2"]), len(data["vo"]))
	if tm, err := os.ReadFile(imgs["v2"] + ".time"); err == nil {
		rep.printf("; build of v2 %s", tm)
	}
	if len(v.Extra) > 0 {
		rep.printf("; tool args + %s", strings.Join(v.Extra, " "))
	}
	rep.printf("\n\n")
	// The CPU a node spends chunking an image it holds (once per image).
	c16, _ := NewCDC(16 << 10)
	start := time.Now()
	_ = c16.Chunks(data["v1"])
	rep.printf("chunking v1 (FastCDC 16 KiB + SHA-256, 2 cores): %.0f MB/s\n\n", float64(len(data["v1"]))/time.Since(start).Seconds()/1e6)

	var notes bytes.Buffer
	defer func() { rep.printf("\n%s", notes.String()) }()
	rep.printf("| case | design | param | download MiB | %% of new | × patch | requests (gap 0 / 64K / 256K) | MiB at gap 64K / 256K | index KiB (zstd) |\n|---|---|---|---|---|---|---|---|---|\n")
	for _, c := range cases {
		if !c.all && !isDefault(v) {
			continue
		}
		nd := data[c.new]
		size := int64(len(nd))
		var patch int64
		if c.patch {
			var err error
			if patch, err = m.patch(v, c.olds[0], c.new); err != nil {
				return err
			}
			rep.printf("| %s | zstd -19 --long --patch-from | | %s | %.1f | 1.00 | 1 | | |\n", c.name, mib(patch), 100*float64(patch)/float64(size))
		}
		xp := func(n int64) string {
			if patch == 0 {
				return ""
			}
			return fmt.Sprintf("%.2f", float64(n)/float64(patch))
		}
		row := func(design, param string, missing []Range, index int) {
			var reqs []string
			var mbs []string
			for i, g := range gaps {
				co := Coalesce(missing, g)
				reqs = append(reqs, fmt.Sprint(len(co)))
				if i > 0 {
					mbs = append(mbs, mib(Total(co)+int64(index)))
				}
			}
			dl := Total(missing) + int64(index)
			rep.printf("| %s | %s | %s | %s | %.1f | %s | %s | %s | %.0f |\n", c.name, design, param, mib(dl), 100*float64(dl)/float64(size), xp(dl),
				strings.Join(reqs, " / "), strings.Join(mbs, " / "), float64(index)/1024)
		}
		var olds [][]byte
		for _, o := range c.olds {
			olds = append(olds, data[o])
		}
		for _, avg := range avgs {
			have := Set{}
			for _, o := range c.olds {
				cs, err := m.cdc(imgs[o], data[o], avg)
				if err != nil {
					return err
				}
				have.Add(cs)
			}
			nc, err := m.cdc(imgs[c.new], nd, avg)
			if err != nil {
				return err
			}
			missing := Missing(nc, have)
			_, index := IndexSize(nc, 32)
			row("CDC", fmt.Sprintf("avg %d KiB (%d chunks)", avg>>10, len(nc)), missing, index)
			if avg == 16<<10 || avg == 64<<10 {
				// casync's chunk store: each missing chunk a blob of its own,
				// compressed alone; one request per chunk.
				dl := CompressedSize(nd, missing) + int64(index)
				rep.printf("| %s | CDC chunk blobs, zstd each | avg %d KiB | %s | %.1f | %s | %d | | %.0f |\n", c.name, avg>>10, mib(dl),
					100*float64(dl)/float64(size), xp(dl), len(missing), float64(index)/1024)
			}
			if isDefault(v) && c.patch {
				m.timeRows(v, c, size, patch, avg, missing, index)
			}
			if regions, err := SquashfsRegions(nd); err == nil && avg == 64<<10 && c.all {
				by := ByRegion(missing, regions)
				var parts []string
				for _, g := range regions {
					parts = append(parts, fmt.Sprintf("%s %d of %d", g.Name, by[g.Name], g.End-g.Off))
				}
				fmt.Fprintf(&notes, "- %s, CDC 64 KiB, missing bytes by region: %s\n", c.name, strings.Join(parts, "; "))
			}
		}
		for _, b := range fixed {
			have := Set{}
			for _, o := range olds {
				have.Add(FixedChunks(o, b))
			}
			nc := FixedChunks(nd, b)
			_, index := IndexSize(nc, 32)
			row("fixed aligned", fmt.Sprintf("%d KiB", b>>10), Missing(nc, have), index)
		}
		for _, b := range rolling {
			nc := FixedChunks(nd, b)
			// zsync's index: a 4-byte weak and a 32-byte strong sum per
			// block, uncompressible.
			row("rolling (zsync)", fmt.Sprintf("%d KiB", b>>10), RollingMissing(nd, b, olds...), len(nc)*(4+32))
		}
		m.logf("%s: %s done", v.Label, c.name)
	}
	return nil
}

// timeRows adds link estimates for one case of a default variant: a full
// pull (one connection, or four parallel ranges), the zstd patch, and the
// CDC delta at each gap and connection count.
func (m *measurer) timeRows(v Variant, c updateCase, size, patch int64, avg int, missing []Range, index int) {
	w := &m.times
	if w.Len() == 0 {
		w.WriteString("| variant | case | design | download MiB | requests | time: 1 / 4 / 8 connections / HTTP/2 / 4 connections with a redirect per request |\n|---|---|---|---|---|---|\n")
	}
	est := func(setup int, setupBytes int64, reqs []int64) string {
		var ts []string
		for _, n := range conns {
			ts = append(ts, fmt.Sprintf("%.2f s", testLink.Time(Fetch{Setup: setup, SetupBytes: setupBytes, Requests: reqs, Conns: n}).Seconds()))
		}
		ts = append(ts, fmt.Sprintf("%.2f s", testLink.Time(Fetch{Setup: setup, SetupBytes: setupBytes, Requests: reqs, Conns: 1, H2: true}).Seconds()))
		ts = append(ts, fmt.Sprintf("%.2f s", testLink.Time(Fetch{Setup: setup, SetupBytes: setupBytes, Requests: reqs, Conns: 4, Redirect: true}).Seconds()))
		return strings.Join(ts, " / ")
	}
	if avg == avgs[0] {
		// Full pull: connect, index, manifest, then the blob; with
		// parallel ranges the blob is cut into n ranges.
		split := make([]int64, 8)
		for i := range split {
			split[i] = size / 8
		}
		split[7] += size % 8
		fmt.Fprintf(w, "| %s | %s | full pull | %s | 1 | %s |\n", v.Label, c.name, mib(size), est(3, 0, []int64{size}))
		fmt.Fprintf(w, "| %s | %s | full pull, 8 parallel ranges | %s | 8 | %s |\n", v.Label, c.name, mib(size), est(3, 0, split))
		// Patch: connect, index, manifest, referrers, the patch's
		// manifest, then the patch blob.
		fmt.Fprintf(w, "| %s | %s | zstd patch | %s | 1 | %s |\n", v.Label, c.name, mib(patch), est(5, 0, []int64{patch}))
	}
	for _, g := range gaps {
		co := Coalesce(missing, g)
		var reqs []int64
		for _, r := range co {
			reqs = append(reqs, r.Len)
		}
		// Connect, index, manifest, referrers, the index's manifest, then
		// the index blob; then the ranges.
		fmt.Fprintf(w, "| %s | %s | CDC %d KiB, gap %d KiB | %s | %d | %s |\n", v.Label, c.name, avg>>10, g>>10,
			mib(Total(co)+int64(index)), len(co), est(6, int64(index), reqs))
	}
}
