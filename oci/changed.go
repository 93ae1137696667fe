package oci

import (
	"errors"
	"io/fs"
	"os"
	"syscall"

	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/registry/remote/errcode"
)

// errFileChanged is why a push stops when a file it pushes is written (or
// replaced) meanwhile: the bytes sent would not be the ones hashed, or not
// the ones whose metadata the manifest carries.
var errFileChanged = errors.New("the file changed while it was pushed: push it again once nothing writes to it")

// fileState is what stat says of a file to push before anything is read
// from it. A write changes its size or times, a replacement its inode. A
// write within the same clock tick as that stat (the kernel stamps files
// with a coarse clock, a few milliseconds) that keeps the size shows only
// in the bytes: the registry's or the layout's digest check refuses
// those, when they came after the hashing (refusedBytes).
type fileState struct {
	dev, ino     uint64
	size         int64
	mtime, ctime int64 // nanoseconds
}

func statFile(path string) (fileState, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return fileState{}, err
	}
	return stateOf(fi), nil
}

func stateOf(fi fs.FileInfo) fileState {
	s := fileState{size: fi.Size(), mtime: fi.ModTime().UnixNano()}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		s.dev, s.ino = uint64(st.Dev), st.Ino
		s.ctime = st.Ctim.Nano()
	}
	return s
}

// check says errFileChanged when the file at path is not as it was (or
// is gone).
func (s fileState) check(path string) error {
	now, err := statFile(path)
	if err != nil || now != s {
		return errFileChanged
	}
	return nil
}

// checkOpen is check for the file f opened, which is what is then sent.
func (s fileState) checkOpen(f *os.File) error {
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if stateOf(fi) != s {
		return errFileChanged
	}
	return nil
}

// refusedBytes says whether err is the receiver refusing a blob because
// its bytes do not have the digest or size they were sent with: the file
// changed after it was hashed.
func refusedBytes(err error) bool {
	if errors.Is(err, errFileChanged) || errors.Is(err, content.ErrMismatchedDigest) || errors.Is(err, content.ErrTrailingData) {
		return true
	}
	var er *errcode.ErrorResponse
	if errors.As(err, &er) {
		for _, e := range er.Errors {
			if e.Code == errcode.ErrorCodeDigestInvalid || e.Code == errcode.ErrorCodeSizeInvalid {
				return true
			}
		}
	}
	return false
}
