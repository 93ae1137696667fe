package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/sysext/sysext/internal/tartest"
	"github.com/sysext/sysext/internal/testenv"
	"github.com/sysext/sysext/oci/ocitest"
)

// rawLayer makes a gzip layer of tar headers as given (bodies for regular
// files), for entries the other helpers cannot express: owners, set-ID
// modes, device nodes, extended attributes.
func rawLayer(t *testing.T, hs ...*tar.Header) ocitest.Layer {
	t.Helper()
	var tb bytes.Buffer
	tw := tar.NewWriter(&tb)
	for _, h := range hs {
		body := h.Linkname // the body of a regular file travels in Linkname here
		if h.Typeflag == tar.TypeReg {
			h.Linkname, h.Size = "", int64(len(body))
		}
		h.ModTime, h.Format = time.Unix(1700000000, 0), tar.FormatPAX
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			tw.Write([]byte(body))
		}
	}
	tw.Close()
	return gzLayer(t, tb.Bytes())
}

func gzLayer(t *testing.T, tarBytes []byte) ocitest.Layer {
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(tarBytes)
	zw.Close()
	return ocitest.Layer{Blob: gz.Bytes(), DiffID: digest.FromBytes(tarBytes)}
}

func pushRaw(t *testing.T, reg *ocitest.Registry, repoTag string, layers ...ocitest.Layer) string {
	t.Helper()
	return ocitest.PushImage(t, reg, repoTag, ocispec.Image{Platform: ocispec.Platform{OS: "linux", Architecture: "amd64"}}, layers...)
}

// TestBuildFromImagePrivileges is issue 19's point 3: an image whose
// set-user-ID program belongs to uid 1000 became set-user-ID root in the
// extension, a program's file capabilities came along, and character and
// block devices (mode 0666) landed in /usr/lib. Device nodes are refused
// naming the path; set-ID bits and capabilities are dropped (with a
// warning) unless --keep-privileges names the file.
func TestBuildFromImagePrivileges(t *testing.T) {
	testenv.RequireRoot(t) // device nodes and capabilities are extracted as root
	testenv.RequireTool(t, "mksquashfs")
	t.Setenv("DOCKER_CONFIG", t.TempDir())
	reg := ocitest.NewOlareg(t)
	caps := make([]byte, 20)
	binary.LittleEndian.PutUint32(caps[0:], 0x02000001) // revision 2, effective
	binary.LittleEndian.PutUint32(caps[4:], 1<<13)      // CAP_NET_RAW
	dir := func(n string) *tar.Header { return &tar.Header{Name: n, Typeflag: tar.TypeDir, Mode: 0o755} }
	programs := []*tar.Header{dir("usr/"), dir("usr/bin/"), dir("usr/lib/"),
		{Name: "usr/bin/su", Typeflag: tar.TypeReg, Mode: 0o4755, Uid: 1000, Gid: 1000, Linkname: "#!/bin/sh\n"},
		{Name: "usr/bin/ping", Typeflag: tar.TypeReg, Mode: 0o755, Linkname: "#!/bin/sh\n",
			PAXRecords: map[string]string{"SCHILY.xattr.security.capability": string(caps)}},
	}
	devices := []*tar.Header{
		{Name: "usr/lib/null", Typeflag: tar.TypeChar, Mode: 0o666, Devmajor: 1, Devminor: 3},
		{Name: "usr/lib/sda", Typeflag: tar.TypeBlock, Mode: 0o666, Devmajor: 8, Devminor: 0},
	}
	withDevices := pushRaw(t, reg, "app/devices:1", rawLayer(t, append(programs, devices...)...))
	plain := pushRaw(t, reg, "app/plain:1", rawLayer(t, programs...))
	out := testenv.TempDirNoLeak(t, ".#")

	_, errs, code := runCLI(t, "build", "--from-image", withDevices, "--name", "app", "--version", "1", "-o", out+"/")
	if lines := strings.Split(strings.TrimSpace(errs), "\n"); code != 1 || !strings.HasPrefix(lines[len(lines)-1], "sysext: bad extension tree: /usr/lib/null is a character device node") {
		t.Fatalf("device nodes: exit %d, %s", code, errs)
	}
	if ents, _ := os.ReadDir(out); len(ents) != 0 {
		t.Fatalf("left %v", ents)
	}

	stdout, errs, code := runCLI(t, "build", "--from-image", plain, "--name", "app", "--version", "1", "-o", out+"/")
	if code != 0 {
		t.Fatalf("build: %d %s", code, errs)
	}
	if !strings.Contains(errs, "/usr/bin/ping, /usr/bin/su") || !strings.Contains(errs, "--keep-privileges") {
		t.Errorf("no warning about the dropped privileges: %s", errs)
	}
	image := filepath.Join(out, "app-1-x86-64.raw")
	files := testenv.ImageFiles(t, image)
	if f := files["usr/bin/su"]; f.Mode != "755" || f.UID != "0" {
		t.Errorf("su: mode %s uid %s (%s)", f.Mode, f.UID, stdout)
	}
	if f := files["usr/bin/ping"]; f.Caps != "" {
		t.Errorf("ping keeps %q", f.Caps)
	}

	if _, errs, code = runCLI(t, "build", "--from-image", plain, "--name", "app", "--version", "2", "-o", out+"/", "--keep-privileges", "/usr/bin/su"); code != 0 {
		t.Fatalf("--keep-privileges: %d %s", code, errs)
	}
	files = testenv.ImageFiles(t, filepath.Join(out, "app-2-x86-64.raw"))
	if f := files["usr/bin/su"]; f.Mode != "4755" {
		t.Errorf("kept su: mode %s", f.Mode)
	}
	if f := files["usr/bin/ping"]; f.Caps != "" {
		t.Errorf("ping keeps %q", f.Caps)
	}
}

// TestBuildFromImageMaxSize: a layer of 200 bytes that unpacks to a
// 200 MiB (sparse) file is refused under --max-size 100M with a one-line
// error naming the flag, and nothing is left next to the output.
func TestBuildFromImageMaxSize(t *testing.T) {
	testenv.RequireTool(t, "mksquashfs")
	t.Setenv("DOCKER_CONFIG", t.TempDir())
	reg := ocitest.NewOlareg(t)
	var tb bytes.Buffer
	tb.Write(tartest.Sparse("usr/lib/big", 200<<20))
	img := pushRaw(t, reg, "app/big:1", gzLayer(t, tb.Bytes()))
	out := testenv.TempDirNoLeak(t, ".#")
	_, errs, code := runCLI(t, "build", "--from-image", img, "--name", "app", "--version", "1", "-o", out+"/", "--max-size", "100M")
	if lines := strings.Split(strings.TrimSpace(errs), "\n"); code != 1 || !strings.Contains(lines[len(lines)-1], "larger than --max-size 100.0 MiB") {
		t.Fatalf("exit %d, %s", code, errs)
	}
	if ents, _ := os.ReadDir(out); len(ents) != 0 {
		t.Fatalf("left %v", ents)
	}
	// Within the limit the sparse file builds.
	if _, errs, code = runCLI(t, "build", "--from-image", img, "--name", "app", "--version", "1", "-o", out+"/", "--max-size", "300M"); code != 0 {
		t.Fatalf("within the limit: %d %s", code, errs)
	}
}

// TestKeepPrivilegesFlag: build and --from-image pass the paths to the
// builder as image paths; flix and flatwrap take them as paths in ROOTFS
// and leave the mapping to the image to the flix package.
func TestKeepPrivilegesFlag(t *testing.T) {
	o := buildOptions{Name: "app", Version: "1", OS: "_any", Format: "squashfs", KeepPrivileges: []string{"/usr/bin/su"}}
	bo, err := o.builderOptions("tree")
	if err != nil || len(bo.KeepPrivileges) != 1 || bo.KeepPrivileges[0] != "/usr/bin/su" {
		t.Fatalf("build: %v %v", bo.KeepPrivileges, err)
	}
	p := packOptions{o}
	fo, bo, err := p.packInputs([]string{"rootfs", "app", "/usr/bin/su"})
	if err != nil || len(fo.KeepPrivileges) != 1 || fo.KeepPrivileges[0] != "/usr/bin/su" || bo.KeepPrivileges != nil {
		t.Fatalf("flix/flatwrap: %v %v %v", fo.KeepPrivileges, bo.KeepPrivileges, err)
	}
	_, errs, code := runCLI(t, "build", "tree", "--name", "x", "--version", "1", "--max-size", "1G")
	if code != 2 || !strings.Contains(errs, "--max-size need --from-image") {
		t.Fatalf("--max-size without --from-image: %d %s", code, errs)
	}
	_, errs, code = runCLI(t, "rootfs", "oci:nowhere", "dir", "--max-size", "lots")
	if code != 2 || !strings.Contains(errs, "is not a size") {
		t.Fatalf("a bad size: %d %s", code, errs)
	}
}
