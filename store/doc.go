// Package store is the node's store of extension images and its state: the
// only writer of node state.
//
// Layout under a root (Options.Root, "/" on a running node):
//
//	/var/lib/sysext/store/NAME/NAME-VERSION-ARCH.raw   write-once, read-only images
//	/var/lib/sysext/state.json                          one small JSON file (atomicfile)
//	/var/lib/sysext/lock                                flock; holder's pid, command, time
//	/var/lib/extensions/NAME.raw -> /var/lib/sysext/store/NAME/FILE   the activation link
//
// Invariants:
//   - Every path is resolved inside Root (or VarRoot) as if it were "/"
//     (internal/inroot): a symlink such as ROOT/var -> /elsewhere cannot
//     make the store write outside it.
//   - Writers hold the one cross-process lock (flock) for the whole
//     operation; a second process waits a bounded time and is told who holds it.
//   - An image becomes visible in the store only after it was downloaded into a
//     staging directory, hashed, fsynced and checked; it is never modified.
//   - Installing requires a verify.Verified for the manifest digest.
//   - The state file and the activation link are two files, so every change
//     that touches both first records its intent in the state (Entry.Pending),
//     then switches the link, then records the result. Open, under the lock,
//     finishes or undoes a change a crash interrupted (the link decides), and
//     removes temp files (".#" names) a crashed run left.
//   - A file or link in an extensions directory that the state does not
//     record is never touched: the operation stops and says so.
//   - Copy mode (baking into an OS image) writes NAME.raw itself, keeps no
//     state and no lock file in /var.
//
// It does not guarantee that systemd-sysext merged anything: that is the
// node package's refresh and check.
package store
