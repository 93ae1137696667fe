package recipe

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sysext/sysext/internal/testenv"
	"go.yaml.in/yaml/v3"
)

func writeFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, body := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func TestSysupdateWritesSumsAndConf(t *testing.T) {
	dir := testenv.TempDirNoLeak(t, ".#")
	writeFiles(t, dir, map[string]string{
		"hello-1.0-x86-64.raw":   "one",
		"hello-1.1-x86-64.raw":   "two",
		"hello-1.1-arm64.raw":    "three",
		"hellox-9-x86-64.raw":    "not ours",
		"SHA256SUMS":             sum([]byte("old")) + "  other-2-x86-64.raw\n" + sum([]byte("stale")) + "  hello-0.9-x86-64.raw\n",
		"hello-1.2-x86-64.raw.x": "not an image",
	})
	res, err := Sysupdate(context.Background(), SysupdateOptions{Name: "hello", ImagesDir: dir, URL: "https://example.org/ext/hello"})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(res.Images, " "); got != "hello-1.0-x86-64.raw hello-1.1-arm64.raw hello-1.1-x86-64.raw" {
		t.Errorf("images %s", got)
	}
	sums, _ := os.ReadFile(res.Sums)
	want := sum([]byte("one")) + "  hello-1.0-x86-64.raw\n" + sum([]byte("three")) + "  hello-1.1-arm64.raw\n" + sum([]byte("two")) + "  hello-1.1-x86-64.raw\n" + sum([]byte("old")) + "  other-2-x86-64.raw\n"
	if string(sums) != want {
		t.Errorf("SHA256SUMS:\n%s\nwant (another extension's line kept, our stale one dropped):\n%s", sums, want)
	}
	conf, _ := os.ReadFile(res.Conf)
	for _, line := range []string{"Type=url-file\n", "Path=https://example.org/ext/hello/\n", "MatchPattern=hello-@v-%a.raw\n", "Path=/opt/extensions/hello\n", "CurrentSymlink=/etc/extensions/hello.raw\n", "InstancesMax=3\n"} {
		if !strings.Contains(string(conf), line) {
			t.Errorf("conf lacks %q:\n%s", line, conf)
		}
	}
	if _, err := Sysupdate(context.Background(), SysupdateOptions{Name: "nothing", ImagesDir: dir, URL: "https://x/"}); err == nil || !strings.Contains(err.Error(), "no nothing-VERSION-ARCH.raw") {
		t.Errorf("no images: %v", err)
	}
}

// TestSysupdateAcceptsConf runs the real systemd-sysupdate (257, see the
// Makefile) on the generated transfer with a local directory source under
// --root, and checks that it lists the versions.
func TestSysupdateAcceptsConf(t *testing.T) {
	sysupdate := testenv.RequireTool(t, "systemd-sysupdate")
	root := t.TempDir()
	images := filepath.Join(root, "srv", "ext")
	writeFiles(t, images, map[string]string{"hello-1.0-x86-64.raw": "one", "hello-1.1-x86-64.raw": "two", "hello-1.1-arm64.raw": "three"})
	if err := os.MkdirAll(filepath.Join(root, "opt", "extensions", "hello"), 0o755); err != nil {
		t.Fatal(err)
	}
	defs := filepath.Join(root, "defs")
	os.MkdirAll(defs, 0o755)
	res, err := Sysupdate(context.Background(), SysupdateOptions{Name: "hello", ImagesDir: images, URL: "/srv/ext", Output: defs})
	if err != nil {
		t.Fatal(err)
	}
	if conf, _ := os.ReadFile(res.Conf); !strings.Contains(string(conf), "Type=regular-file\nPath=/srv/ext\n") {
		t.Fatalf("a directory --url is not a regular-file source:\n%s", conf)
	}
	// With --root, systemd-sysupdate resolves every path (the definitions
	// too) inside the root: nothing on the host is read or written.
	cmd := exec.Command(sysupdate, "--root="+root, "--definitions=/defs", "--no-pager", "list")
	cmd.Env = append(os.Environ(), "SYSTEMD_LOG_LEVEL=info")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("systemd-sysupdate list: %v\n%s", err, out)
	}
	for _, v := range []string{"1.1", "1.0"} {
		if !strings.Contains(string(out), " "+v+" ") {
			t.Errorf("systemd-sysupdate does not list version %s:\n%s", v, out)
		}
	}
	if strings.Contains(string(out), "Failed") || strings.Contains(string(out), "rror") {
		t.Errorf("systemd-sysupdate complained:\n%s", out)
	}
}

func TestButane(t *testing.T) {
	out, err := Butane(ButaneOptions{Ref: "ghcr.io/acme/ext/tailscale:1.76", Key: []byte("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")})
	if err != nil {
		t.Fatal(err)
	}
	var cfg butaneConfig
	if err := yaml.Unmarshal([]byte(out), &cfg); err != nil {
		t.Fatalf("not YAML: %v\n%s", err, out)
	}
	if cfg.Variant != "flatcar" || cfg.Version != "1.0.0" {
		t.Errorf("variant %s %s", cfg.Variant, cfg.Version)
	}
	if cfg.Storage == nil || len(cfg.Storage.Files) != 1 || cfg.Storage.Files[0].Path != "/etc/sysext/keys/tailscale.pub" || !strings.Contains(cfg.Storage.Files[0].Contents.Inline, "BEGIN PUBLIC KEY") {
		t.Errorf("key not embedded: %+v", cfg.Storage)
	}
	units := map[string]butaneUnit{}
	for _, u := range cfg.Systemd.Units {
		units[u.Name] = u
	}
	install := units["sysext-install-tailscale.service"]
	if install.Enabled == nil || !*install.Enabled || !strings.Contains(install.Contents, "ExecStart=/usr/bin/env sysext pull ghcr.io/acme/ext/tailscale:1.76 --name tailscale --key /etc/sysext/keys/tailscale.pub\n") {
		t.Errorf("install unit:\n%s", install.Contents)
	}
	if timer := units["sysext-update.timer"]; timer.Enabled == nil || !*timer.Enabled {
		t.Errorf("update timer not enabled: %+v", timer)
	}

	hash := "sha512-" + strings.Repeat("0", 128)
	out, err = Butane(ButaneOptions{Ref: "registry.local:5000/docker@sha256:" + strings.Repeat("a", 64), Variant: "fcos", BinaryURL: "https://example.org/sysext", BinaryHash: hash})
	if err != nil {
		t.Fatal(err)
	}
	cfg = butaneConfig{}
	if err := yaml.Unmarshal([]byte(out), &cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.Variant != "fcos" || cfg.Storage.Files[0].Path != "/usr/local/bin/sysext" || cfg.Storage.Files[0].Contents.Verification.Hash != hash {
		t.Errorf("fcos binary: %+v", cfg.Storage.Files)
	}
	if !strings.Contains(out, "ExecStart=/usr/local/bin/sysext update --all") || !strings.Contains(out, "sysext-install-docker.service") {
		t.Errorf("fcos snippet:\n%s", out)
	}
	if _, err := Butane(ButaneOptions{Ref: "x y"}); err == nil {
		t.Error("a reference with a space was accepted")
	}
	if _, err := Butane(ButaneOptions{Ref: "a/b:1", Variant: "rhel"}); err == nil {
		t.Error("unknown variant accepted")
	}
}

// TestButaneStrict feeds the snippets to the real butane (make tools
// builds it), which refuses unknown keys and warnings with --strict.
func TestButaneStrict(t *testing.T) {
	butane := testenv.RequireTool(t, "butane")
	for _, o := range []ButaneOptions{
		{Ref: "ghcr.io/acme/ext/tailscale:1.76", Key: []byte("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")},
		{Ref: "ghcr.io/acme/ext/docker:27", Variant: "fcos", BinaryURL: "https://example.org/sysext", BinaryHash: "sha512-" + strings.Repeat("0", 128)},
		{Ref: "oci:/srv/ext:k3s", Name: "k3s", BinaryURL: "https://example.org/sysext"},
	} {
		snippet, err := Butane(o)
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(butane, "--strict")
		cmd.Stdin = strings.NewReader(snippet)
		var stderr strings.Builder
		cmd.Stderr = &stderr
		ign, err := cmd.Output()
		if err != nil {
			t.Fatalf("butane --strict refused the snippet for %s: %v\n%s\n%s", o.Ref, err, stderr.String(), snippet)
		}
		if !strings.Contains(string(ign), `"ignition":{"version":"3.`) || !strings.Contains(string(ign), "sysext-install-") {
			t.Errorf("unexpected Ignition for %s: %s", o.Ref, ign)
		}
	}
}

// The binary's verification hash is Ignition's (sha512-HEX or sha256-HEX of
// the right length) and describes the file at BinaryURL.
func TestButaneBinaryHash(t *testing.T) {
	ok := ButaneOptions{Ref: "ghcr.io/acme/ext/nebula:1", BinaryURL: "https://example.org/sysext"}
	for _, h := range []string{"sha256-" + strings.Repeat("a", 64), "sha512-" + strings.Repeat("B", 128)} {
		o := ok
		o.BinaryHash = h
		if _, err := Butane(o); err != nil {
			t.Errorf("%s: %v", h, err)
		}
	}
	for h, want := range map[string]string{
		"sha512-00":                         "--binary-hash",
		"md5-" + strings.Repeat("a", 32):    "--binary-hash",
		"sha256" + strings.Repeat("a", 64):  "--binary-hash",
		"sha256-" + strings.Repeat("g", 64): "--binary-hash",
	} {
		o := ok
		o.BinaryHash = h
		if _, err := Butane(o); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v", h, err)
		}
	}
	o := ok
	o.BinaryURL, o.BinaryHash = "", "sha256-"+strings.Repeat("a", 64)
	if _, err := Butane(o); err == nil || !strings.Contains(err.Error(), "give --binary-url") {
		t.Errorf("a hash without a URL: %v", err)
	}
	f := filepath.Join(t.TempDir(), "sysext")
	if err := os.WriteFile(f, []byte("abc"), 0o755); err != nil {
		t.Fatal(err)
	}
	// sha512("abc"), FIPS 180-2's example.
	const abc = "sha512-ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f"
	if got, err := IgnitionHash(f); err != nil || got != abc {
		t.Errorf("IgnitionHash = %s, %v", got, err)
	}
}
