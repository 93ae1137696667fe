// Package extension is the domain core of sysext: extension-release and
// os-release files, extension names and versions, architectures, the rules
// by which systemd-sysext decides whether an extension merges on a host, and
// the words an activation's status is recorded in.
//
// Invariants: it imports only the standard library and performs no I/O, so
// every other package can use it and its rules are testable as pure
// functions. Every name or version it accepts is safe to use as a single
// file name component.
package extension
