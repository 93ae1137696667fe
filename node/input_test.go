package node

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"strings"
	"testing"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/content"

	"github.com/sysext/sysext/extension"
	"github.com/sysext/sysext/oci"
	"github.com/sysext/sysext/oci/ocitest"
)

// TestImageNamesAnotherExtension: a manifest whose annotations say "liar"
// but whose image's extension-release is "hello" is refused after the
// download and nothing is activated.
func TestImageNamesAnotherExtension(t *testing.T) {
	reg := ocitest.NewOlareg(t)
	res := push(t, reg.Ref("ext/hello:1"), makeImage(t, meta("hello", "1.0"), 0))
	tg, _ := reg.Open(t, "ext/hello:1")
	ctx := context.Background()
	body, err := content.FetchAll(ctx, tg, res.Manifests[0].Descriptor)
	must(t, err)
	var m ocispec.Manifest
	must(t, json.Unmarshal(body, &m))
	m.Annotations[oci.AnnotationName] = "liar"
	b, _ := json.Marshal(m)
	d := content.NewDescriptorFromBytes(ocispec.MediaTypeImageManifest, b)
	must(t, tg.Push(ctx, d, bytes.NewReader(b)))
	must(t, tg.Tag(ctx, d, "liar"))
	root := nodeRoot(t, debianRelease)
	_, err = testNode(root).Pull(ctx, PullRequest{Ref: reg.Ref("ext/hello:liar")})
	if err == nil || !strings.Contains(err.Error(), "hello") || !strings.Contains(err.Error(), "liar") {
		t.Fatalf("pull of a manifest that lies about the name: %v", err)
	}
	l, _ := testNode(root).List(ctx)
	if len(l.Extensions) != 0 {
		t.Fatalf("installed: %+v", l.Extensions)
	}
}

func TestDeclaredBadInput(t *testing.T) {
	osr, _ := extension.ParseRelease([]byte("ID=fedora\nVERSION_ID=42\n"))
	for _, c := range []struct{ conf, want string }{
		{"Source=x/y:1\n", "outside a section"},
		{"[Ext]\nSource=x\n", "unknown section"},
		{"[Extension]\nSorce=x\n", `unknown key "Sorce"`},
		{"[Extension]\nName=a/b\nSource=x\n", "contains"},
		{"[Extension]\nName=ok\n", "no Source="},
		{"[Extension]\nSource=x\nInsecureAllowUnsigned=maybe\n", "not a boolean"},
		{"[Extension]\nSource=x\njunk\n", "expected KEY=VALUE"},
	} {
		_, err := ParseDeclared("/etc/sysext/extensions.d/ok.conf", []byte(c.conf))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: %v, want %q", c.conf, err, c.want)
		}
	}
	d, err := ParseDeclared("/usr/lib/sysext/extensions.d/docker.conf", []byte("# c\n[Extension]\nSource=ghcr.io/a/docker:24-{ID}-{VERSION_ID}-{ARCHITECTURE}\nPolicy=key:/k.pub\n"))
	if err != nil || d.Name != "docker" {
		t.Fatal(d, err)
	}
	src, err := ExpandSource(d.Source, osr, "arm64")
	if err != nil || src != "ghcr.io/a/docker:24-fedora-42-arm64" {
		t.Fatal(src, err)
	}
	for _, bad := range []string{"x:{NOPE}", "x:{ID", "x:{SYSEXT_LEVEL}"} {
		if _, err := ExpandSource(bad, osr, "arm64"); err == nil {
			t.Errorf("%q expanded", bad)
		}
	}
}

// TestInstallUnitsBinIsOneWord: --bin becomes the command of ExecStart=
// lines; a value that would add lines or words is refused, nothing written.
func TestInstallUnitsBinIsOneWord(t *testing.T) {
	for _, bin := range []string{"/usr/bin/sysext\nExecStartPre=/bin/evil", "/opt/my bin/sysext", "/opt/%n/sysext"} {
		root := t.TempDir()
		if _, err := InstallUnits(root, "/etc/systemd/system", bin, true); err == nil || !strings.Contains(err.Error(), "--bin") {
			t.Errorf("--bin %q: %v", bin, err)
		}
		if ents, _ := os.ReadDir(root); len(ents) != 0 {
			t.Errorf("--bin %q: wrote %v", bin, ents)
		}
	}
}
