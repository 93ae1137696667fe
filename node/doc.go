// Package node runs what a node does with extensions: pull, update, sync,
// rollback, remove, gc and check, from resolving a reference to refreshing
// systemd-sysext. It composes oci (resolve, download), a Verifier (the trust
// policy), store (the only writer of node state) and a Refresher.
//
// Order of a pull: resolve the tag → pick the platform → manifest
// (size-limited) → verify against the policy (and, for a veritySigned
// scope, the manifest's verity annotations) → compatibility with the target
// root's os-release, from the annotations, before any download → preflight
// hook → download into the store's ingest (hashed while streaming, resumed
// on a cut connection and, in the next run, after a kill; image metadata
// checked; a disk image's hash tree against its data and its signature
// against the policy's certificates, then the certificate and image policy
// installed for systemd: verity.go) → commit → install: refuse a foreign
// file, switch the link → refresh (only on the running system) →
// post-activation check hook; a failed refresh or check switches back to
// the previous version. With --copy the same checks end in store.Copier
// instead: NAME.raw itself, nothing activated.
//
// Activation is driven by activate.Driver: record, refresh, prove; on
// failure switch back, refresh, prove the previous state. Refresher,
// Preflighter and Checker are interfaces in Options (production:
// SystemdRefresher, ActivatePreflight, activate.Prover); the store's
// Entry.Activation records pending, refreshed, proven, unproven,
// rolled-back or failed with the reason and the file tried, and the next
// pull, update, rollback or sync finishes what a killed run left.
//
// Invariants: any failure before the link switch leaves the active image
// and the state as they were; nothing here writes node state except through
// store.
package node
