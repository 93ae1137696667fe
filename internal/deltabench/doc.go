// Package deltabench measures what an update of an extension image costs
// to download under the delta designs of issue 15, on a workload of real
// programs: two consecutive releases of a few CLI tools from the Go module
// proxy (only some change), their docs and shell completions, and
// unchanged units, built as versions of one extension in squashfs and
// EROFS.
//
// It holds the workload builder (Workload, BuildTree), the product's
// content-defined chunker (package delta) at other average sizes,
// fixed-block and rsync-style matching,
// the arithmetic that turns missing chunks into coalesced HTTP Range
// requests, and a link model that turns bytes and round trips into an
// update's wall time. The heavy measurement (programs built, images made,
// zstd run) is Measure, run by `go run ./internal/deltabench/deltameasure
// -work DIR`; the package's tests are fast.
//
// The product's delta downloads (package delta, node) chose their chunker
// parameters from these numbers; their benchmark reuses the workload
// builder.
package deltabench
