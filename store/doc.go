// Package store is the node's store of extension images and its state: the
// only writer of node state. Image files are write-once; state is one small
// file written atomically; activation is a link swapped by rename; one
// cross-process lock serialises writers.
package store
