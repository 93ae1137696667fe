package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/sysext/sysext/extension"
	"github.com/sysext/sysext/internal/testenv"
	"github.com/sysext/sysext/internal/testhook"
	"github.com/sysext/sysext/oci"
	"github.com/sysext/sysext/oci/ocitest"
)

// hangImage is issue 19's crafted squashfs, which kept go-diskfs busy for
// minutes through inspect, fetch and pull.
const hangImage = "../../fsimage/testdata/squashfs-hang.raw"

// pushCrafted puts image behind a layout reference as a sysext artifact
// for the host's architecture, annotations and all.
func pushCrafted(t *testing.T, image string) string {
	t.Helper()
	data, err := os.ReadFile(image)
	if err != nil {
		t.Fatal(err)
	}
	ref := ocitest.NewLayout(t, "1.0")
	tg, err := oci.Open(context.Background(), ref, oci.Options{CreateLayout: true})
	if err != nil {
		t.Fatal(err)
	}
	ann := oci.Annotations(ocitest.Meta("hello", "1.0", extension.HostArch()))
	ocitest.PushRaw(t, tg, "1.0", data, oci.MediaTypeSquashfs, oci.ArtifactType, nil, ann)
	return ref.String()
}

// noTemps fails if anything under dir is a temp file (".#...").
func noTemps(t *testing.T, dir string) {
	t.Helper()
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && strings.HasPrefix(d.Name(), ".#") {
			t.Errorf("temp file left: %s", p)
		}
		return nil
	})
}

func nodeRoot(t *testing.T) string {
	root := t.TempDir()
	writeFile(t, filepath.Join(root, "etc/os-release"), "ID=debian\nVERSION_ID=12\n")
	return root
}

// TestHangImageCommands: inspect, fetch and pull refuse the crafted image
// with a one-line error, leave nothing behind, and pull releases the store
// (the next command runs).
func TestHangImageCommands(t *testing.T) {
	t.Setenv("DOCKER_CONFIG", t.TempDir())
	const want = "corrupt squashfs image"
	// The error is the last line (warnings and progress come before).
	check := func(what, errs string, code int) {
		t.Helper()
		lines := strings.Split(strings.TrimSpace(errs), "\n")
		if last := lines[len(lines)-1]; code != exitFailure || !strings.HasPrefix(last, "sysext: ") || !strings.Contains(last, want) {
			t.Errorf("%s: exit %d, %q; want exit 1 and a last line saying %q", what, code, errs, want)
		}
	}
	_, errs, code := runCLI(t, "inspect", hangImage)
	check("inspect", errs, code)
	_, errs, code = runCLI(t, "inspect", hangImage, "--json")
	check("inspect --json", errs, code)

	ref := pushCrafted(t, hangImage)
	dir := t.TempDir()
	_, errs, code = runCLI(t, "fetch", ref, "-o", dir, "--insecure-allow-unsigned")
	check("fetch", errs, code)
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("fetch left %d entries in %s", len(ents), dir)
	}

	root := nodeRoot(t)
	_, errs, code = runCLI(t, "pull", ref, "--root", root, "--insecure-allow-unsigned")
	check("pull", errs, code)
	noTemps(t, root)
	if out, errs, code := runCLI(t, "list", "--root", root, "--json"); code != 0 || strings.Contains(out, "hello") {
		t.Errorf("list after the refused pull: %d %s %s", code, out, errs)
	}
}

// TestFetchRemovesStaleTemp: a temp file left by a fetch killed with
// SIGKILL is removed by the next fetch into the same directory.
func TestFetchRemovesStaleTemp(t *testing.T) {
	t.Setenv("DOCKER_CONFIG", t.TempDir())
	img := ocitest.Squashfs(t, ocitest.Meta("stale", "1.0", extension.HostArch()), []byte("payload"))
	ref := ocitest.NewLayout(t, "1").String()
	if _, errs, code := runCLI(t, "push", "-q", img, ref); code != 0 {
		t.Fatalf("push: %s", errs)
	}
	dir := t.TempDir()
	name := extension.FileName("stale", "1.0", extension.HostArch())
	stale := filepath.Join(dir, ".#"+name+".1234567")
	writeFile(t, stale, "half an image")
	if _, errs, code := runCLI(t, "fetch", ref, "-o", dir, "--insecure-allow-unsigned"); code != 0 {
		t.Fatalf("fetch: %s", errs)
	}
	if _, err := os.Stat(stale); !os.IsNotExist(err) {
		t.Errorf("the stale temp file is still there: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
		t.Error(err)
	}
}

// The signal test runs the command in a child process (this test binary)
// whose image reads are slow: the first one lasts until the command is
// interrupted. Environment of the child:
const envSignalArgs = "SYSEXT_SIGNAL_ARGS" // the command line, JSON

// TestSignalChild is the child's body; it does nothing in a normal run.
func TestSignalChild(t *testing.T) {
	var args []string
	if json.Unmarshal([]byte(os.Getenv(envSignalArgs)), &args) != nil || len(args) == 0 {
		t.Skip("only run as the signal test's child")
	}
	first := true
	testhook.ImageRead = func(ctx context.Context) {
		if first {
			first = false
			os.Stdout.WriteString("reading\n")
			<-ctx.Done()
		}
	}
	// As main does.
	ctx, stop := interruptible(context.Background())
	code := run(ctx, args, os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// TestSignalDuringRead: SIGTERM while inspect, fetch or pull reads an
// image makes the command stop, exit 1 and leave nothing behind (the
// readers check the context; before, they ignored it).
func TestSignalDuringRead(t *testing.T) {
	if testing.Short() {
		t.Skip("child processes")
	}
	t.Setenv("DOCKER_CONFIG", t.TempDir())
	img := ocitest.Squashfs(t, ocitest.Meta("sig", "1.0", extension.HostArch()), []byte("payload"))
	ref := ocitest.NewLayout(t, "1").String()
	if _, errs, code := runCLI(t, "push", "-q", img, ref); code != 0 {
		t.Fatalf("push: %s", errs)
	}
	dir := t.TempDir()
	root := nodeRoot(t)
	for _, args := range [][]string{
		{"inspect", img},
		{"fetch", ref, "-o", dir, "--insecure-allow-unsigned"},
		{"pull", ref, "--root", root, "--insecure-allow-unsigned"},
	} {
		t.Run(args[0], func(t *testing.T) {
			enc, _ := json.Marshal(args)
			cmd := exec.Command(os.Args[0], "-test.run=^TestSignalChild$")
			cmd.Env = append(os.Environ(), envSignalArgs+"="+string(enc))
			var stderr strings.Builder
			cmd.Stderr = &stderr
			out, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			line, _ := bufio.NewReader(out).ReadString('\n')
			if line != "reading\n" {
				cmd.Process.Kill()
				cmd.Wait()
				t.Fatalf("the child never read the image: %q %s", line, stderr.String())
			}
			cmd.Process.Signal(syscall.SIGTERM)
			err = cmd.Wait()
			if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 128+int(syscall.SIGTERM) || !strings.Contains(stderr.String(), "interrupted by SIGTERM") {
				t.Fatalf("after SIGTERM: %v; want exit 143 saying the command was interrupted; stderr: %s", err, stderr.String())
			}
			noTemps(t, dir)
			noTemps(t, root)
			if ents, _ := os.ReadDir(dir); len(ents) != 0 {
				t.Errorf("fetch left %d entries in %s", len(ents), dir)
			}
		})
	}
	// The store is free and holds nothing: the pull starts over and works.
	if _, errs, code := runCLI(t, "pull", ref, "--root", root, "--insecure-allow-unsigned"); code != 0 {
		t.Fatalf("pull after the interrupted one: %s", errs)
	}
}

// TestInspectSpecialFiles: inspect FILE lists, in text and JSON, the
// setuid and setgid files, file capabilities and device nodes of an image
// made by mksquashfs, names escaped when they hold invisible characters;
// and it says when the digest came from the cache attribute.
func TestInspectSpecialFiles(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireTool(t, "mksquashfs")
	tree := t.TempDir()
	p := func(s string) string { return filepath.Join(tree, s) }
	writeFile(t, p("usr/lib/extension-release.d/extension-release.spec"), "ID=_any\n")
	writeFile(t, p("usr/bin/su"), "su")
	writeFile(t, p("usr/bin/ev\u202eil"), "hidden") // right-to-left override in the name
	writeFile(t, p("usr/bin/ping"), "ping")
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.Chmod(p("usr/bin/su"), 0o755|os.ModeSetuid))
	must(os.Chown(p("usr/bin/ev\u202eil"), 0, 5))
	must(os.Chmod(p("usr/bin/ev\u202eil"), 0o755|os.ModeSetgid))
	// vfs_cap_data revision 2: cap_net_raw, permitted and effective.
	must(unix.Setxattr(p("usr/bin/ping"), "security.capability", []byte{1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, 0))
	must(unix.Mknod(p("usr/lib/null"), unix.S_IFCHR|0o644, int(unix.Mkdev(1, 3))))
	img := filepath.Join(t.TempDir(), "spec.raw")
	if out, err := exec.Command("mksquashfs", tree, img, "-quiet", "-no-progress").CombinedOutput(); err != nil {
		t.Fatalf("mksquashfs: %v %s", err, out)
	}

	out, errs, code := runCLI(t, "inspect", img)
	if code != 0 {
		t.Fatalf("inspect: %d %s", code, errs)
	}
	for _, want := range []string{
		"setuid:         /usr/bin/su (mode 4755, uid 0)\n",
		`setgid:         /usr/bin/ev\u202eil (mode 2755, gid 5)` + "\n",
		"capabilities:   /usr/bin/ping cap_net_raw=ep\n",
		"device node:    /usr/lib/null (char 1:3, mode 0644)\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("inspect output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "\u202e") {
		t.Errorf("an invisible character printed raw:\n%s", out)
	}

	out, errs, code = runCLI(t, "inspect", img, "--json")
	var j struct {
		DigestCached bool `json:"digest_cached"`
		Special      struct {
			Files            []specialFileJSON `json:"files"`
			CapabilitiesRead bool              `json:"capabilities_read"`
		} `json:"special_files"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &j) != nil {
		t.Fatalf("inspect --json: %d %s %s", code, out, errs)
	}
	want := []specialFileJSON{
		{Path: "/usr/bin/ev\u202eil", Mode: "2755", GID: 5, Setgid: true},
		{Path: "/usr/bin/ping", Mode: "0644", Capabilities: "cap_net_raw=ep"},
		{Path: "/usr/bin/su", Mode: "4755", Setuid: true},
		{Path: "/usr/lib/null", Mode: "0644", Device: "char 1:3"},
	}
	if !reflect.DeepEqual(j.Special.Files, want) || !j.Special.CapabilitiesRead {
		t.Errorf("special_files = %+v, want %+v", j.Special, want)
	}
	// The first inspect computed the digest and cached it (where the
	// filesystem keeps user xattrs): the second says it is the cached one.
	if _, err := unix.Getxattr(img, "user.sysext.sha256", make([]byte, 256)); err == nil {
		if !j.DigestCached {
			t.Errorf("the second inspect computed the digest again")
		}
		if out, _, _ := runCLI(t, "inspect", img); !strings.Contains(out, "(cached in the file's user.sysext.sha256 attribute)") {
			t.Errorf("a cached digest not labelled:\n%s", out)
		}
	}
}
