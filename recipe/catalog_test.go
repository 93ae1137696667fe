package recipe

import (
	"net/url"
	"os"
	"path"
	"strings"
	"testing"

	"github.com/sysext/sysext/extension"
)

// The catalog the issue asks for, at least.
var wantCatalog = []string{
	"cilium", "consul", "containerd", "crio", "docker", "docker-buildx", "docker-compose",
	"k3s", "kubernetes", "nebula", "nomad", "ollama", "rke2", "tailscale", "vault",
	"wasmcloud", "wasmtime",
}

func TestCatalogParsesAndRenders(t *testing.T) {
	all, err := Catalog()
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]*Recipe{}
	for _, r := range all {
		have[r.Name] = r
	}
	for _, n := range wantCatalog {
		if have[n] == nil {
			t.Errorf("catalog has no %s recipe", n)
		}
	}
	for _, r := range all {
		for _, arch := range []extension.Arch{"x86-64", "arm64"} {
			t.Run(r.Name+"/"+string(arch), func(t *testing.T) {
				if r.Version.Example == "" {
					t.Fatal("no version example")
				}
				p, err := r.Resolve(ResolveOptions{Version: r.Version.Example, Arch: arch})
				if err != nil {
					t.Fatal(err)
				}
				goarch, _ := arch.OCIPlatform()
				for _, d := range p.Downloads {
					for _, raw := range []string{d.URL, d.ChecksumURL} {
						if raw == "" {
							continue
						}
						u, err := url.Parse(raw)
						if err != nil || u.Scheme != "https" || u.Host == "" || strings.Contains(raw, "${") || strings.Contains(raw, "//"+u.Host+"//") {
							t.Errorf("download %s: bad URL %q", d.ID, raw)
						}
					}
					// Every arch-specific download names the arch the way
					// upstream does; a URL without it would fetch the
					// same file for every architecture.
					base := path.Base(d.URL)
					if !strings.Contains(d.URL, goarch) && !strings.Contains(d.URL, arch.Upstream()) && !(r.Name == "k3s" && arch == "x86-64" && base == "k3s") {
						t.Errorf("download %s: %s names neither %s nor %s", d.ID, d.URL, goarch, arch.Upstream())
					}
					if d.SHA256 == "" && d.ChecksumURL == "" && !strings.Contains(r.Notes, "--sha256") {
						t.Errorf("download %s has no checksum and the notes do not say how to give one", d.ID)
					}
					if d.ChecksumURL != "" && d.ChecksumEntry == "" {
						t.Errorf("download %s: empty checksum entry", d.ID)
					}
				}
				for _, f := range p.Files {
					if strings.Contains(f.From, "${") {
						t.Errorf("unexpanded from %q", f.From)
					}
				}
				for _, u := range p.Units {
					if !strings.Contains(u.Content, "[Service]") && !strings.Contains(u.Content, "[Socket]") {
						t.Errorf("unit %s has no [Service] or [Socket] section", u.Name)
					}
					if strings.Contains(u.Content, "/usr/sbin/") || strings.Contains(u.Content, "/usr/local/bin/") {
						t.Errorf("unit %s runs a program outside /usr/bin", u.Name)
					}
				}
			})
		}
	}
}

func TestCatalogServicesHaveUnits(t *testing.T) {
	// Recipes for daemons ship their units; enabled ones are upheld.
	want := map[string][]string{
		"docker":     {"docker.socket", "docker.service", "containerd.service"},
		"containerd": {"containerd.service"},
		"kubernetes": {"kubelet.service"},
		"k3s":        {"k3s.service", "k3s-agent.service"},
		"crio":       {"crio.service"},
		"tailscale":  {"tailscaled.service"},
		"wasmcloud":  {"wasmcloud.service", "nats.service"},
		"ollama":     {"ollama.service"},
		"nebula":     {"nebula.service"},
		"nomad":      {"nomad.service"},
		"consul":     {"consul.service"},
		"vault":      {"vault.service"},
	}
	for name, units := range want {
		r, err := Lookup(name)
		if err != nil {
			t.Fatal(err)
		}
		p, err := r.Resolve(ResolveOptions{Version: r.Version.Example, Arch: "x86-64"})
		if err != nil {
			t.Fatal(err)
		}
		have := map[string]bool{}
		for _, u := range p.Units {
			have[u.Name] = true
		}
		for _, u := range units {
			if !have[u] {
				t.Errorf("%s does not ship %s", name, u)
			}
		}
	}
	r, _ := Lookup("docker")
	p, err := r.Resolve(ResolveOptions{Version: "27.3.1", Arch: "arm64", Options: map[string]string{"without": "containerd"}})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(p.Enabled(), ","); got != "docker.socket" {
		t.Errorf("docker --without containerd enables %s, want docker.socket only", got)
	}
	for _, f := range p.Files {
		if strings.Contains(f.From, "containerd") || f.From == "docker/runc" {
			t.Errorf("docker --without containerd still ships %s", f.From)
		}
	}
}

// TestDocsExampleParses keeps the complete example in docs/recipes.md valid.
func TestDocsExampleParses(t *testing.T) {
	doc, err := os.ReadFile("../docs/recipes.md")
	if err != nil {
		t.Fatal(err)
	}
	start := strings.Index(string(doc), "```yaml\n# tailscale.yaml\n")
	if start < 0 {
		t.Fatal("docs/recipes.md has no complete example")
	}
	body := string(doc)[start+len("```yaml\n"):]
	body = body[:strings.Index(body, "```")]
	r, err := Parse([]byte(body), "docs/recipes.md example")
	if err != nil {
		t.Fatal(err)
	}
	p, err := r.Resolve(ResolveOptions{Version: "1.76.6", Arch: "arm64", Options: map[string]string{"flavour": "cli"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Units) != 0 || len(p.Files) != 1 || p.Downloads[0].URL != "https://pkgs.tailscale.com/stable/tailscale_1.76.6_arm64.tgz" {
		t.Errorf("example resolved to %+v", p)
	}
}
