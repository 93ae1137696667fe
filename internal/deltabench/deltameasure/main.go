// Command deltameasure builds issue 15's delta workload and writes the
// measurement report (deltabench.Measure) to WORK/report-TIME.md and to
// standard output. Run it niced: a first run takes tens of minutes.
//
//	nice go run ./internal/deltabench/deltameasure -work /work/scratch/delta [-variants '(default),-C65536']
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/sysext/sysext/internal/deltabench"
)

func main() {
	work := flag.String("work", "", "scratch directory for the builds, images and patches (reused between runs)")
	only := flag.String("variants", "", "measure only the variants whose label contains one of these comma-separated words")
	flag.Parse()
	if *work == "" {
		fmt.Fprintln(os.Stderr, "deltameasure: -work DIR is required: a scratch directory with a few GB free")
		os.Exit(2)
	}
	variants := deltabench.Variants
	if *only != "" {
		words := strings.Split(*only, ",")
		variants = slices.DeleteFunc(slices.Clone(variants), func(v deltabench.Variant) bool {
			return !slices.ContainsFunc(words, func(w string) bool { return strings.Contains(v.Label, w) })
		})
		if len(variants) == 0 {
			fmt.Fprintf(os.Stderr, "deltameasure: no variant matches %q\n", *only)
			os.Exit(2)
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rep, err := deltabench.Measure(ctx, deltabench.MeasureOptions{
		Work:     *work,
		Variants: variants,
		Logf:     func(f string, a ...any) { fmt.Fprintf(os.Stderr, f+"\n", a...) },
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "deltameasure:", err)
		os.Exit(1)
	}
	out := filepath.Join(*work, "report-"+time.Now().UTC().Format("20060102T150405")+".md")
	if err := os.WriteFile(out, rep, 0o644); err != nil {
		fmt.Fprintln(os.Stderr, "deltameasure:", err)
		os.Exit(1)
	}
	os.Stdout.Write(rep)
	fmt.Fprintln(os.Stderr, "report:", out)
}
