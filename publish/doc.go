// Package publish puts extension images where nodes pull them from and
// signs what it put there: `sysext push`, `sysext bake --push` and
// `sysext sign` are one call each. It sits above oci (the artifact) and
// verify (the signatures) and joins them; neither knows the other.
//
// Invariants: a push that signs loads nothing late (the caller opens the
// key before it calls), and signs exactly what it pushed, each manifest it
// wrote and then the index, so architectures kept by --append keep the
// signatures they have. Replacing a signed index (--append) is refused
// before anything is uploaded unless the new one is signed by the same
// key, or the caller allows losing that signer: a node that checks
// signatures would otherwise refuse the tag after a silent push.
package publish
