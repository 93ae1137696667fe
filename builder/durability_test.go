package builder

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/sysext/sysext/extension"
	"github.com/sysext/sysext/internal/testenv"
)

// TestDigestAndSyncAreOptIn: a build hashes its image only when asked, and
// flushes it to disk when asked or when it lands in a directory that
// systemd-sysext merges from (also below another root), never otherwise.
func TestDigestAndSyncAreOptIn(t *testing.T) {
	testenv.RequireTool(t, "mksquashfs")
	tree := filepath.Join(t.TempDir(), "tree")
	if err := os.MkdirAll(filepath.Join(tree, "usr/bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(tree, "usr/bin/hello"), []byte("#!/bin/sh\necho hi\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var phases []string
	phaseHook = func(name string, _ time.Duration) {
		mu.Lock()
		defer mu.Unlock()
		phases = append(phases, name)
	}
	t.Cleanup(func() { phaseHook = nil })

	root := t.TempDir()
	mergeDir := filepath.Join(root, "sysroot/var/lib/extensions")
	if err := os.MkdirAll(mergeDir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name             string
		output           string
		digest, sync     bool
		wantDig, wantFsy bool
	}{
		{"artifact", t.TempDir(), false, false, false, false},
		{"digest asked", t.TempDir(), true, false, true, false},
		{"sync asked", t.TempDir(), false, true, false, true},
		{"merge directory", mergeDir, false, false, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			phases = nil
			res, err := Build(context.Background(), Options{
				Tree:   tree,
				Meta:   extension.Metadata{Name: "optin", Version: "1", Arch: "x86-64", ID: "_any"},
				Output: tc.output, Digest: tc.digest, Sync: tc.sync, Force: true,
			})
			if err != nil {
				t.Fatal(err)
			}
			if (res.Digest != "") != tc.wantDig {
				t.Errorf("digest %q, want one: %v", res.Digest, tc.wantDig)
			}
			if slices.Contains(phases, "digest") != tc.wantDig || slices.Contains(phases, "fsync") != tc.wantFsy {
				t.Errorf("phases %v: want digest %v, fsync %v", phases, tc.wantDig, tc.wantFsy)
			}
			if _, err := os.Stat(res.Path); err != nil {
				t.Fatal(err)
			}
		})
	}
}
