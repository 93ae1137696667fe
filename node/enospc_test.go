package node

import (
	"context"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/sysext/sysext/internal/testenv"
	"github.com/sysext/sysext/oci/ocitest"
)

const envENOSPCRoot = "SYSEXT_ENOSPC_ROOT"

// TestENOSPCChild runs inside a private mount namespace whose node root is
// a small tmpfs: a pull that does not fit fails at once with ENOSPC, and the
// active image, the state and the directory stay as they were.
func TestENOSPCChild(t *testing.T) {
	root := os.Getenv(envENOSPCRoot)
	if root == "" {
		t.Skip("only run as the ENOSPC test's child")
	}
	must(t, os.MkdirAll(filepath.Join(root, "etc"), 0o755))
	must(t, os.WriteFile(filepath.Join(root, "etc/os-release"), []byte(debianRelease), 0o644))
	n := testNode(root)
	ctx := context.Background()
	if _, err := n.Pull(ctx, PullRequest{Ref: os.Getenv("SYSEXT_ENOSPC_SMALL")}); err != nil {
		t.Fatal(err)
	}
	state, _ := os.ReadFile(filepath.Join(root, "var/lib/sysext/state.json"))
	link, _ := os.Readlink(filepath.Join(root, "var/lib/extensions/full.raw"))
	_, err := n.Pull(ctx, PullRequest{Ref: os.Getenv("SYSEXT_ENOSPC_BIG")})
	if err == nil || !strings.Contains(err.Error(), syscall.ENOSPC.Error()) {
		t.Fatalf("pull onto a full disk: %v", err)
	}
	state2, _ := os.ReadFile(filepath.Join(root, "var/lib/sysext/state.json"))
	link2, _ := os.Readlink(filepath.Join(root, "var/lib/extensions/full.raw"))
	if string(state) != string(state2) || link != link2 {
		t.Fatal("state or link changed by a failed pull")
	}
	filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err == nil && strings.HasPrefix(fi.Name(), ".#") {
			t.Errorf("temp file %s left", p)
		}
		return nil
	})
}

func TestENOSPC(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireTool(t, "unshare")
	// Requests for the big image's layer (chunk indexes are blobs too).
	var bigLayer atomic.Value
	var bigLayerGets atomic.Int64
	reg := ocitest.NewOlareg(t, func(w http.ResponseWriter, r *http.Request, next http.Handler) bool {
		if d, ok := bigLayer.Load().(string); ok && ocitest.Blobs(r) && strings.HasSuffix(r.URL.Path, "/"+d) {
			bigLayerGets.Add(1)
		}
		return false
	})
	small, big := reg.Ref("ext/full:small"), reg.Ref("ext/full:big")
	push(t, small, makeImage(t, meta("full", "1"), 0))
	pushed := push(t, big, makeImage(t, meta("full", "2"), 8<<20))
	bigLayer.Store(string(pushed.Manifests[0].Layer.Digest))
	root := t.TempDir()
	script := "mount --make-rprivate / && mount -t tmpfs -o size=4m tmpfs " + testenv.ShellQuote(root) +
		" && exec " + testenv.ShellQuote(os.Args[0]) + " -test.run=^TestENOSPCChild$ -test.count=1 -test.v"
	cmd := exec.Command("unshare", "-m", "sh", "-c", script)
	cmd.Env = append(os.Environ(), envENOSPCRoot+"="+root, "SYSEXT_ENOSPC_SMALL="+small, "SYSEXT_ENOSPC_BIG="+big)
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS: TestENOSPCChild") {
		t.Fatalf("child: %v\n%s", err, out)
	}
	// The big image's download failed before or at its first request and
	// was not retried.
	if b := bigLayerGets.Load(); b > 1 {
		t.Fatalf("%d requests for the big image's layer: the full disk was retried", b)
	}
}
