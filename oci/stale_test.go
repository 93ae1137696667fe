package oci_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/sysext/sysext/atomicfile"
	"github.com/sysext/sysext/oci"
	"github.com/sysext/sysext/oci/ocitest"
)

// TestDownloadRemovesStaleTemps: the temp file a killed download left in
// the directory (issue 19: kill -9 during fetch) is removed by the next
// download there; a live download's temp file and other files stay.
func TestDownloadRemovesStaleTemps(t *testing.T) {
	p := pushImage(t, ocitest.NewOlareg(t), 1000)
	dir := t.TempDir()
	stale := filepath.Join(dir, ".#hello-0.9-x86-64.raw.2849211")
	os.WriteFile(stale, []byte("half an image"), 0o644)
	mine := filepath.Join(dir, "notes.txt")
	os.WriteFile(mine, nil, 0o644)
	live, err := atomicfile.Create(filepath.Join(dir, "other.raw"), 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()

	d, err := oci.Download(context.Background(), p.tg, &p.r.Entry, oci.DownloadOptions{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(stale); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("stale temp file still there: %v", err)
	}
	for _, keep := range []string{mine, live.TempName(), d.Path} {
		if _, err := os.Stat(keep); err != nil {
			t.Errorf("%s: %v", keep, err)
		}
	}
}
