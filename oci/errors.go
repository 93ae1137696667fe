package oci

import (
	"fmt"

	"github.com/opencontainers/go-digest"
)

// SizeMismatchError says a store answered a blob with another length than
// its descriptor declares (a Content-Length, or the bytes themselves).
type SizeMismatchError struct {
	Digest digest.Digest
	Size   int64 // what the descriptor declares
}

func (e *SizeMismatchError) Error() string {
	return fmt.Sprintf("layer %s: size mismatch: the store's answer is not the %d bytes the manifest declares", e.Digest, e.Size)
}

// CopyOrigin says which side of a copy failed.
type CopyOrigin int

const (
	CopyOriginSource      CopyOrigin = 1
	CopyOriginDestination CopyOrigin = 2
)

func (o CopyOrigin) String() string {
	switch o {
	case CopyOriginSource:
		return "source"
	case CopyOriginDestination:
		return "destination"
	}
	return "unknown"
}

// CopyError is every error of Copy: what it was doing (Op: "resolve",
// "check", "copy", "tag", "referrers") and on which side (Origin), as
// oras-go's CopyError says for a graph copy. Its text is Err's, which names
// the reference.
type CopyError struct {
	Op     string
	Origin CopyOrigin
	Ref    Reference // the side's reference
	Err    error
}

func (e *CopyError) Error() string { return e.Err.Error() }
func (e *CopyError) Unwrap() error { return e.Err }
