// Package inroot resolves and opens paths inside an OS tree (--root) the way
// the kernel does for a process whose root directory is that tree, as
// openat2(2) with RESOLVE_IN_ROOT does: an absolute symlink starts again at
// the tree's root, and ".." at the root stays there. A path named inside
// the tree (by a flag, a default such as /var/lib/sysext, or a file in the
// tree such as a declaration's Policy=) therefore never reaches the host
// through a symlink like ROOT/var -> /elsewhere.
//
// It is the one home of that rule: store (the only writer of node state)
// maps every path through Join, node reads declarations and os-release
// through Open, verify reads a policy's keys through it. It lives under
// internal/ because it is a filesystem mechanism shared by those packages,
// not a rule of the extension domain (extension does no I/O).
//
// Open uses openat2(RESOLVE_IN_ROOT) when the kernel has it (5.6+) and
// otherwise resolves component by component with the same semantics; Join
// always walks component by component, because writers need a path (for
// atomic rename, link(2), flock) rather than a file descriptor. A root of
// "" or "/" is the running system: paths are used as they are.
//
// It does not defend against a process that changes the tree while we
// resolve it (whoever can write the tree can change what we read anyway).
package inroot
