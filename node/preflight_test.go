package node

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// CheckPreflight judges every installed extension's active image when no
// file is given, leaves out (and names) one it cannot read, and refuses a
// given file it cannot read. It writes nothing.
func TestCheckPreflightInstalled(t *testing.T) {
	ref, root := publishedHello(t, "1")
	ctx := context.Background()
	if _, err := testNode(root).Pull(ctx, PullRequest{Ref: ref}); err != nil {
		t.Fatal(err)
	}
	so := storeOpts(root)
	res, err := CheckPreflight(ctx, so, nil, false)
	if err != nil || res.Checked != 1 || len(res.Warnings) != 0 || res.Report == nil {
		t.Fatalf("installed: %+v %v", res, err)
	}

	junk := filepath.Join(t.TempDir(), "junk.raw")
	if err := os.WriteFile(junk, []byte("not an image"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := CheckPreflight(ctx, so, []string{junk}, false); err == nil || !strings.Contains(err.Error(), "junk.raw") {
		t.Fatalf("a given file that is not an image: %v", err)
	}

	// The active image replaced by junk: named, not judged.
	e := entry(t, root, "hello")
	img := filepath.Join(root, "var/lib/sysext/store/hello", e.Active.File)
	if err := os.Chmod(img, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(img, []byte("not an image"), 0o644); err != nil {
		t.Fatal(err)
	}
	res, err = CheckPreflight(ctx, so, nil, false)
	if err != nil || res.Checked != 0 || len(res.Warnings) != 1 {
		t.Fatalf("an unreadable installed image: %+v %v", res, err)
	}
}
