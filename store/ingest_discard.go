package store

import (
	"fmt"
	"os"
)

// Discard ends an ingest that was not committed and removes what it
// wrote, partial or not: a delta download that failed (its bytes were
// checked only against a chunk index nobody signed) starts the full
// download afresh rather than resume from them. Like Commit and Close it
// ends the ingest.
func (in *Ingest) Discard() error {
	if in.done {
		return nil
	}
	in.done = true
	if in.w == nil {
		return nil
	}
	in.w.Close()
	if err := os.RemoveAll(in.dir); err != nil {
		return fmt.Errorf("%s: %w", in.name, err)
	}
	return nil
}
