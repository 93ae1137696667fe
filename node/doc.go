// Package node runs what a node does with extensions: pull, update, sync,
// rollback, remove, gc and check, from resolving a reference to refreshing
// systemd-sysext. It composes oci, verify and store.
package node
