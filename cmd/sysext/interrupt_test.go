package main

import (
	"bytes"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/sysext/sysext/extension"
	"github.com/sysext/sysext/internal/testenv"
	"github.com/sysext/sysext/oci/ocitest"
)

// TestCtrlCSaysWhatStopped sends SIGINT to a real sysext pull in the
// middle of its download: it exits 130, names the command and says that
// nothing changed, and nothing did (no image stored or linked, no temp
// file left).
func TestCtrlCSaysWhatStopped(t *testing.T) {
	bin := testenv.BuildSysext(t)
	started := make(chan struct{}, 1)
	img := ocitest.Squashfs(t, ocitest.Meta("hello", "1.0", extension.HostArch()), bytes.Repeat([]byte("x"), 1<<20))
	fi, err := os.Stat(img)
	if err != nil {
		t.Fatal(err)
	}
	// The blob's first bytes arrive, then the registry stalls until the
	// client goes away. The length is the image's: a wrong one is refused
	// as soon as the answer's headers are read, before the interrupt.
	stall := ocitest.Serve(ocitest.Blobs, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.FormatInt(fi.Size(), 10))
		w.WriteHeader(http.StatusOK)
		w.Write(bytes.Repeat([]byte{0}, 4096))
		w.(http.Flusher).Flush()
		select {
		case started <- struct{}{}:
		default:
		}
		<-r.Context().Done()
	})
	reg := ocitest.NewOlareg(t, stall)
	ref := reg.Ref("ext/hello:1")
	t.Setenv("DOCKER_CONFIG", t.TempDir())
	if _, errs, code := runCLI(t, "push", "-q", img, ref); code != 0 {
		t.Fatal(errs)
	}
	root := t.TempDir()
	writeFile(t, filepath.Join(root, "etc/os-release"), "ID=debian\nVERSION_ID=12\n")

	cmd := exec.Command(bin, "pull", ref, "--root", root, "--insecure-allow-unsigned", "-q")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	<-started
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	err = cmd.Wait()
	if code := cmd.ProcessState.ExitCode(); code != 130 {
		t.Fatalf("exit %d (%v), want 130\n%s", code, err, stderr.String())
	}
	msg := stderr.String()
	if !strings.Contains(msg, "sysext pull interrupted by SIGINT (Ctrl-C)") || !strings.Contains(msg, "nothing was changed") || strings.Contains(msg, "context canceled") {
		t.Fatalf("stderr:\n%s", msg)
	}
	filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err == nil && (strings.HasSuffix(p, ".raw") || strings.HasPrefix(d.Name(), ".#")) {
			t.Errorf("left %s", p)
		}
		return nil
	})
}
