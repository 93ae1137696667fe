// Package atomicfile is the project's one way to write a file or replace a
// link so that a crash, a full disk or a cancelled context never leaves a
// torn result: the content goes to a temp file named after the target in
// the same directory, is fsynced, renamed over the target, and the
// directory is fsynced. The temp file is removed on every error.
// CommitUnsynced skips the fsyncs, for reproducible build artifacts only.
//
// Temp names start with ".#", which systemd and our own readers treat as
// temporary files and ignore.
package atomicfile
