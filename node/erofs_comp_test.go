package node

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/sysext/sysext/activate"
	"github.com/sysext/sysext/builder"
	"github.com/sysext/sysext/fsimage"
	"github.com/sysext/sysext/internal/testenv"
)

// EROFS images compressed with lzma, deflate and zstd (the ones that keep
// deltas small, docs/building.md) go the whole way: built by the builder
// with erofs-utils 1.8, pushed with their chunk index to the real
// distribution registry, pulled, updated by a delta, and merged by the
// host's systemd-sysext in a private namespace after each step.
func TestEROFSCompressorsEndToEnd(t *testing.T) {
	testenv.RequireRoot(t)
	t.Setenv("PATH", testenv.TrixieBin(t)+string(os.PathListSeparator)+os.Getenv("PATH"))
	reg := newDeltaReg(t)
	// Text-like data that compresses, most of it shared by the versions.
	var shared bytes.Buffer
	for i := 0; shared.Len() < 3<<20; i++ {
		fmt.Fprintf(&shared, "line %d of the shared data, %x\n", i, blob(8, uint64(i)))
	}
	for _, alg := range []string{"lzma", "deflate", "zstd"} {
		t.Run(alg, func(t *testing.T) {
			name := "erofs" + alg
			build := func(version string) string {
				tree := t.TempDir()
				for p, c := range map[string][]byte{
					"usr/bin/" + name + "-hello":  []byte("#!/bin/sh\necho " + name + " " + version + "\n"),
					"usr/share/" + name + "/data": shared.Bytes(),
					"usr/share/" + name + "/news": bytes.Repeat([]byte("version "+version+"\n"), 20000),
				} {
					must(t, os.MkdirAll(filepath.Dir(filepath.Join(tree, p)), 0o755))
					must(t, os.WriteFile(filepath.Join(tree, p), c, 0o755))
				}
				return buildEROFS(t, tree, name, version, alg)
			}
			v1, v2 := build("1.0"), build("2.0")
			ref := reg.Ref("sysext/" + name + ":stable")
			push(t, ref, v1)
			root := nodeRoot(t, debianRelease)
			var log bytes.Buffer
			n := logNode(root, &log)
			ctx := context.Background()
			if _, err := n.Pull(ctx, PullRequest{Ref: ref}); err != nil {
				t.Fatalf("pull: %v\n%s", err, log.String())
			}
			checkActive(t, root, name, v1)
			if out := mergeAndRun(t, root, name+"-hello"); !strings.Contains(out, name+" 1.0") {
				t.Fatalf("merged 1.0 does not run:\n%s", out)
			}
			push(t, ref, v2)
			reg.served.Reset()
			rs, err := n.Update(ctx, UpdateOptions{All: true})
			if err != nil || len(rs) != 1 || rs[0].Action != "updated" {
				t.Fatalf("update: %+v %v\n%s", rs, err, log.String())
			}
			checkActive(t, root, name, v2)
			// The shared data is taken from 1.0, not downloaded again.
			if sent := reg.served.Bytes(); rs[0].Reused == 0 || sent >= size(t, v2) {
				t.Fatalf("update sent %d of %d bytes, reused %d:\n%s", sent, size(t, v2), rs[0].Reused, log.String())
			}
			t.Logf("%s: update sent %d of %d bytes, reused %d", alg, reg.served.Bytes(), size(t, v2), rs[0].Reused)
			if out := mergeAndRun(t, root, name+"-hello; cat /usr/share/"+name+"/news | head -1"); !strings.Contains(out, name+" 2.0") || !strings.Contains(out, "version 2.0") {
				t.Fatalf("merged 2.0 does not run:\n%s", out)
			}
			info, err := fsimage.OpenMetadata(ctx, v2)
			if err != nil || !slices.Equal(info.Compression, []string{alg}) {
				t.Fatalf("OpenMetadata: %v, compression %v", err, info)
			}
		})
	}
}

// A node whose kernel configuration lacks an EROFS image's compressor
// is told before the download, from the manifest's annotation that push
// wrote. A test node's root is not "/", so the running kernel's finding
// is a warning (activate's TestPreflightEROFSCompressor has the refusal
// of the running system); --strict refuses it before any byte of the
// image is sent, and nothing is installed.
func TestEROFSCompressorPreflight(t *testing.T) {
	t.Setenv("PATH", testenv.TrixieBin(t)+string(os.PathListSeparator)+os.Getenv("PATH"))
	reg := newDeltaReg(t)
	tree := t.TempDir()
	must(t, os.MkdirAll(filepath.Join(tree, "usr/bin"), 0o755))
	must(t, os.WriteFile(filepath.Join(tree, "usr/bin/z-hello"), bytes.Repeat([]byte("#!/bin/sh\necho z\n"), 2000), 0o755))
	res, err := builder.Build(context.Background(), builder.Options{Tree: tree, Meta: meta("z", "1.0"), Format: builder.EROFS, Compression: "zstd", Output: t.TempDir() + "/"})
	must(t, err)
	ref := reg.Ref("sysext/z:stable")
	push(t, ref, res.Path)
	cfg := filepath.Join(t.TempDir(), "config")
	must(t, os.WriteFile(cfg, []byte("CONFIG_EROFS_FS=y\nCONFIG_EROFS_FS_ZIP=y\nCONFIG_EROFS_FS_ZIP_LZMA=y\n"), 0o644))
	const cause = "the kernel cannot read zstd EROFS images: CONFIG_EROFS_FS_ZIP_ZSTD is not set in "
	root := nodeRoot(t, debianRelease)
	o := testNode(root).opts
	o.Preflighter = &ActivatePreflight{Strict: true, System: activate.System{KernelConfig: cfg}}
	reg.served.Reset()
	_, err = New(o).Pull(context.Background(), PullRequest{Ref: ref})
	if err == nil || !strings.Contains(err.Error(), cause+cfg) || !strings.Contains(err.Error(), "--compression lz4hc") {
		t.Fatalf("pull --strict = %v", err)
	}
	if sent := reg.served.Bytes(); sent != 0 {
		t.Fatalf("the registry sent %d blob bytes before the refusal", sent)
	}
	if _, err := os.Lstat(filepath.Join(root, "var/lib/extensions/z.raw")); err == nil {
		t.Fatal("a refused pull left a link")
	}
	var log bytes.Buffer
	o.Preflighter = &ActivatePreflight{Log: &log, System: activate.System{KernelConfig: cfg}}
	if _, err := New(o).Pull(context.Background(), PullRequest{Ref: ref}); err != nil || !strings.Contains(log.String(), "warning: z: "+cause) {
		t.Fatalf("pull = %v, log:\n%s", err, log.String())
	}
	checkActive(t, root, "z", res.Path)
}
