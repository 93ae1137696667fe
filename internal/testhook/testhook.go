// Package testhook holds the few fault-injection points a test sets inside
// a child process (a slow disk, say) to reach a state no real input
// reaches deterministically. Each is nil in production, where it costs one
// nil check.
package testhook

import "context"

// ImageRead, when set, runs before each read of an image's bytes by
// fsimage's readers, with the context of the read: a test makes a read
// last until the command is interrupted.
var ImageRead func(ctx context.Context)

// PushFile, when set, runs in push at three points of each file, with its
// path: "read" once its metadata was read and before it is hashed,
// "hashed" once its digest is known, and "send" just before it is opened
// to be sent (on the streaming path that runs beside the hashing: a test
// makes it wait for "hashed"). A test rewrites the file there, to change
// it while it is pushed.
var PushFile func(point, path string)
