// Package ctxio makes long copies stop when their context is cancelled:
// io.Copy and friends take no context, so the reader checks it before each
// read.
package ctxio
