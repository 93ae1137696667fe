package smallfile

import (
	"fmt"
	"io"
	"io/fs"
	"os"
)

// TooLargeError says the file at Path has more than Limit bytes.
type TooLargeError struct {
	Path  string
	Limit int64
}

func (e *TooLargeError) Error() string {
	return fmt.Sprintf("%s is more than %d bytes", e.Path, e.Limit)
}

// Read returns the contents of path when it has at most limit bytes, else a
// *TooLargeError. Open and read errors are *fs.PathError (a missing file's
// matches fs.ErrNotExist).
func Read(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return ReadOpen(f, limit)
}

// ReadOpen is Read for a file already open (one opened inside a root, or
// through a directory handle); errors name f.Name(). It does not close f.
func ReadOpen(f *os.File, limit int64) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, &fs.PathError{Op: "read", Path: f.Name(), Err: err}
	}
	if int64(len(b)) > limit {
		return nil, &TooLargeError{Path: f.Name(), Limit: limit}
	}
	return b, nil
}
