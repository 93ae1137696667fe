package recipe

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sysext/sysext/builder"
	"github.com/sysext/sysext/extension"
	"github.com/sysext/sysext/internal/testenv"
)

// bakeCase is one catalog recipe with upstream-shaped fixtures.
type bakeCase struct {
	name    string
	version string
	options map[string]string
	pins    map[string]string
	// programs that must run from the merged /usr and print their fixture line
	programs []string
	// image paths (relative to /) that must exist after the merge
	paths []string
	// units upheld, as "TARGET UNIT"
	upholds []string
}

// addFixtures publishes upstream-shaped downloads for c on u and returns
// the case with pins filled in where the upstream publishes no checksums.
func addFixtures(t testing.TB, u *upstream, c bakeCase) bakeCase {
	t.Helper()
	v := c.version
	bare := strings.TrimPrefix(v, "v")
	switch c.name {
	case "docker":
		// download.docker.com/linux/static/stable/x86_64/docker-V.tgz: one
		// docker/ directory, no checksum file upstream.
		data := tgz(t,
			member{name: "docker/", dir: true},
			exe("docker/docker", script("docker", v)),
			exe("docker/dockerd", script("dockerd", v)),
			exe("docker/docker-init", script("docker-init", v)),
			exe("docker/docker-proxy", script("docker-proxy", v)),
			exe("docker/containerd", script("containerd", v)),
			exe("docker/containerd-shim-runc-v2", script("containerd-shim-runc-v2", v)),
			exe("docker/ctr", script("ctr", v)),
			exe("docker/runc", script("runc", v)))
		u.add("https://download.docker.com/linux/static/stable/x86_64/docker-"+v+".tgz", data)
		c.pins = map[string]string{"docker": sum(data)}
	case "tailscale":
		dir := "tailscale_" + bare + "_amd64/"
		data := tgz(t,
			exe(dir+"tailscale", script("tailscale", v)),
			exe(dir+"tailscaled", script("tailscaled", v)),
			file(dir+"systemd/tailscaled.service", "[Service]\nExecStart=/usr/sbin/tailscaled\n"),
			file(dir+"systemd/tailscaled.defaults", "PORT=\"41641\"\nFLAGS=\"\"\n"))
		url := "https://pkgs.tailscale.com/stable/tailscale_" + bare + "_amd64.tgz"
		u.add(url, data)
		u.add(url+".sha256", []byte(sum(data)+"\n")) // a lone digest
	case "kubernetes":
		for _, p := range []string{"kubeadm", "kubelet", "kubectl"} {
			data := []byte(script(p, v))
			url := "https://dl.k8s.io/release/" + v + "/bin/linux/amd64/" + p
			u.add(url, data)
			u.add(url+".sha256", []byte(sum(data)))
		}
		cni := c.options["cni-version"]
		// The CNI tarball's members start with "./".
		data := tgz(t, member{name: "./", dir: true}, exe("./bridge", script("bridge", cni)), exe("./host-local", script("host-local", cni)), file("./LICENSE", "Apache-2.0\n"))
		name := "cni-plugins-linux-amd64-" + cni + ".tgz"
		url := "https://github.com/containernetworking/plugins/releases/download/" + cni + "/" + name
		u.add(url, data)
		u.add(url+".sha256", []byte(sum(data)+"  "+name+"\n"))
	case "nomad":
		data := zipOf(t, member{name: "nomad", body: script("nomad", v)}, member{name: "LICENSE.txt", body: "BUSL-1.1\n"})
		base := "https://releases.hashicorp.com/nomad/" + bare + "/"
		u.add(base+"nomad_"+bare+"_linux_amd64.zip", data)
		u.add(base+"nomad_"+bare+"_SHA256SUMS", []byte(
			strings.Repeat("0", 64)+"  nomad_"+bare+"_darwin_arm64.zip\n"+
				sum(data)+"  nomad_"+bare+"_linux_amd64.zip\n"))
	case "wasmtime":
		dir := "wasmtime-v" + bare + "-x86_64-linux/"
		data := txz(t, exe(dir+"wasmtime", script("wasmtime", v)), file(dir+"LICENSE", "Apache-2.0\n"), file(dir+"README.md", "wasmtime\n"))
		u.add("https://github.com/bytecodealliance/wasmtime/releases/download/v"+bare+"/wasmtime-v"+bare+"-x86_64-linux.tar.xz", data)
		c.pins = map[string]string{"wasmtime": sum(data)}
	case "ollama":
		data := tgz(t,
			exe("bin/ollama", script("ollama", v)),
			member{name: "lib/ollama/", dir: true},
			file("lib/ollama/libggml-base.so", "not really a library\n"),
			member{name: "lib/ollama/libggml.so", link: "libggml-base.so"},
			file("lib/ollama/cuda_v12/libggml-cuda.so", "nor this\n"))
		base := "https://github.com/ollama/ollama/releases/download/v" + bare + "/"
		u.add(base+"ollama-linux-amd64.tgz", data)
		// ollama's sha256sum.txt names files as ./NAME.
		u.add(base+"sha256sum.txt", []byte(strings.Repeat("1", 64)+"  ./ollama-darwin.tgz\n"+sum(data)+"  ./ollama-linux-amd64.tgz\n"))
	case "rke2":
		data := tgz(t,
			exe("bin/rke2", script("rke2", v)),
			exe("bin/rke2-killall.sh", "#!/bin/sh\n"),
			file("lib/systemd/system/rke2-server.service", "[Service]\nExecStart=/usr/local/bin/rke2 server\n"),
			file("lib/systemd/system/rke2-agent.service", "[Service]\nExecStart=/usr/local/bin/rke2 agent\n"),
			file("share/rke2/rke2-cis-sysctl.conf", "vm.panic_on_oom=0\n"))
		base := "https://github.com/rancher/rke2/releases/download/" + v + "/"
		u.add(base+"rke2.linux-amd64.tar.gz", data)
		u.add(base+"sha256sum-amd64.txt", []byte(sum(data)+"  rke2.linux-amd64.tar.gz\n"+strings.Repeat("2", 64)+"  rke2-images.linux-amd64.tar.zst\n"))
	case "k3s":
		data := []byte(script("k3s", v))
		base := "https://github.com/k3s-io/k3s/releases/download/" + v + "/"
		u.add(base+"k3s", data)
		u.add(base+"sha256sum-amd64.txt", []byte(sum(data)+"  k3s\n"+strings.Repeat("3", 64)+"  k3s-airgap-images-amd64.tar\n"))
	case "containerd":
		name := "containerd-static-" + bare + "-linux-amd64.tar.gz"
		data := tgz(t,
			exe("bin/containerd", script("containerd", v)),
			exe("bin/containerd-shim-runc-v2", script("containerd-shim-runc-v2", v)),
			exe("bin/ctr", script("ctr", v)),
			exe("bin/containerd-stress", script("containerd-stress", v)))
		url := "https://github.com/containerd/containerd/releases/download/v" + bare + "/" + name
		u.add(url, data)
		u.add(url+".sha256sum", []byte(sum(data)+"  "+name+"\n"))
		runc := []byte(script("runc", c.options["runc-version"]))
		base := "https://github.com/opencontainers/runc/releases/download/" + c.options["runc-version"] + "/"
		u.add(base+"runc.amd64", runc)
		u.add(base+"runc.sha256sum", []byte(strings.Repeat("4", 64)+"  libseccomp-2.5.5.tar.gz\n"+sum(runc)+"  runc.amd64\n"+strings.Repeat("5", 64)+"  runc.arm64\n"))
	case "crio":
		name := "cri-o.amd64.v" + bare + ".tar.gz"
		var ms []member
		for _, p := range []string{"crio", "pinns", "crictl", "conmon", "conmonrs", "crun", "runc"} {
			ms = append(ms, exe("cri-o/bin/"+p, script(p, v)))
		}
		ms = append(ms,
			file("cri-o/etc/10-crio.conf", "[crio.runtime]\ndefault_runtime = \"crun\"\n"),
			file("cri-o/etc/crictl.yaml", "runtime-endpoint: unix:///var/run/crio/crio.sock\n"),
			file("cri-o/etc/crio-umount.conf", "/var/run/containers/*\n"),
			file("cri-o/contrib/policy.json", "{\"default\":[{\"type\":\"insecureAcceptAnything\"}]}\n"),
			file("cri-o/contrib/crio.service", "[Service]\nExecStart=/usr/local/bin/crio\n"),
			exe("cri-o/install", "#!/usr/bin/env bash\n"))
		data := tgz(t, ms...)
		url := "https://storage.googleapis.com/cri-o/artifacts/" + name
		u.add(url, data)
		u.add(url+".sha256sum", []byte(sum(data)+"  "+name+"\n"))
	case "docker-compose":
		data := []byte(script("docker-compose", v))
		url := "https://github.com/docker/compose/releases/download/v" + bare + "/docker-compose-linux-x86_64"
		u.add(url, data)
		u.add(url+".sha256", []byte(sum(data)+" *docker-compose-linux-x86_64\n"))
	case "docker-buildx":
		data := []byte(script("docker-buildx", v))
		base := "https://github.com/docker/buildx/releases/download/v" + bare + "/"
		u.add(base+"buildx-v"+bare+".linux-amd64", data)
		u.add(base+"checksums.txt", []byte(strings.Repeat("6", 64)+" *buildx-v"+bare+".darwin-arm64\n"+sum(data)+" *buildx-v"+bare+".linux-amd64\n"))
	case "wasmcloud":
		host := []byte(script("wasmcloud", v))
		u.add("https://github.com/wasmCloud/wasmCloud/releases/download/v"+bare+"/wasmcloud-x86_64-unknown-linux-musl", host)
		c.pins = map[string]string{"wasmcloud": sum(host)}
		nv := "v2.10.22"
		dir := "nats-server-" + nv + "-linux-amd64"
		data := tgz(t, exe(dir+"/nats-server", script("nats-server", nv)), file(dir+"/README.md", "nats\n"), file(dir+"/LICENSE", "Apache-2.0\n"))
		base := "https://github.com/nats-io/nats-server/releases/download/" + nv + "/"
		u.add(base+dir+".tar.gz", data)
		u.add(base+"SHA256SUMS", []byte(strings.Repeat("7", 64)+"  "+dir+".zip\n"+sum(data)+"  "+dir+".tar.gz\n"))
	case "nebula":
		data := tgz(t, exe("nebula", script("nebula", v)), exe("nebula-cert", script("nebula-cert", v)))
		base := "https://github.com/slackhq/nebula/releases/download/v" + bare + "/"
		u.add(base+"nebula-linux-amd64.tar.gz", data)
		u.add(base+"SHASUM256.txt", []byte(strings.Repeat("8", 64)+"  nebula-darwin.zip\n"+sum(data)+"  nebula-linux-amd64.tar.gz\n"+strings.Repeat("9", 64)+"  linux-amd64/nebula\n"))
	case "cilium":
		data := tgz(t, exe("cilium", script("cilium", v)))
		url := "https://github.com/cilium/cilium-cli/releases/download/v" + bare + "/cilium-linux-amd64.tar.gz"
		u.add(url, data)
		u.add(url+".sha256sum", []byte(sum(data)+"  cilium-linux-amd64.tar.gz\n"))
	case "consul", "vault":
		data := zipOf(t, member{name: c.name, body: script(c.name, v)}, member{name: "LICENSE.txt", body: "BUSL-1.1\n"})
		base := "https://releases.hashicorp.com/" + c.name + "/" + bare + "/"
		u.add(base+c.name+"_"+bare+"_linux_amd64.zip", data)
		u.add(base+c.name+"_"+bare+"_SHA256SUMS", []byte(sum(data)+"  "+c.name+"_"+bare+"_linux_amd64.zip\n"))
	default:
		t.Fatalf("no fixture for %s", c.name)
	}
	return c
}

// mergeGroups are merged together, group by group: images in one group do
// not ship the same programs, so each program's output names its image.
var mergeGroups = [][]bakeCase{{
	{name: "docker", version: "27.3.1",
		programs: []string{"docker", "dockerd", "containerd", "runc", "ctr"},
		paths:    []string{"usr/lib/systemd/system/docker.socket", "usr/lib/systemd/system/docker.service", "usr/lib/systemd/system/containerd.service", "usr/share/docker/daemon.json", "usr/share/docker/containerd.toml", "usr/lib/tmpfiles.d/docker.conf", "usr/lib/sysusers.d/docker.conf"},
		upholds:  []string{"sockets.target docker.socket", "multi-user.target containerd.service"}},
	{name: "tailscale", version: "1.76.6",
		programs: []string{"tailscale", "tailscaled"},
		paths:    []string{"usr/lib/systemd/system/tailscaled.service", "usr/share/tailscale/default/tailscaled", "usr/lib/tmpfiles.d/tailscale.conf"},
		upholds:  []string{"multi-user.target tailscaled.service"}},
	{name: "kubernetes", version: "v1.31.2", options: map[string]string{"cni-version": "v1.6.0"},
		programs: []string{"kubeadm", "kubelet", "kubectl", "../libexec/cni/bridge"},
		paths:    []string{"usr/lib/systemd/system/kubelet.service.d/10-kubeadm.conf", "usr/libexec/cni/host-local"},
		upholds:  []string{"multi-user.target kubelet.service"}},
	{name: "nomad", version: "1.9.3", programs: []string{"nomad"}, paths: []string{"usr/lib/systemd/system/nomad.service", "usr/share/nomad/nomad.d/nomad.hcl"}},
	{name: "wasmtime", version: "26.0.1", programs: []string{"wasmtime"}},
	{name: "ollama", version: "0.4.2", programs: []string{"ollama"}, paths: []string{"usr/lib/ollama/libggml.so", "usr/lib/ollama/cuda_v12/libggml-cuda.so"},
		upholds: []string{"multi-user.target ollama.service"}},
	{name: "rke2", version: "v1.31.2+rke2r1", programs: []string{"../local/bin/rke2"}, paths: []string{"usr/local/lib/systemd/system/rke2-server.service", "usr/local/share/rke2/rke2-cis-sysctl.conf"}},
}, {
	{name: "containerd", version: "2.0.0", options: map[string]string{"runc-version": "v1.2.2"},
		programs: []string{"containerd", "ctr", "runc", "containerd-shim-runc-v2"},
		paths:    []string{"usr/share/containerd/config.toml", "usr/lib/tmpfiles.d/containerd.conf"},
		upholds:  []string{"multi-user.target containerd.service"}},
	{name: "crio", version: "1.31.2",
		programs: []string{"crio", "crictl", "pinns", "../libexec/crio/conmon", "../libexec/crio/conmonrs", "../libexec/crio/crun"},
		paths:    []string{"usr/share/crio/crio.conf.d/10-crio.conf", "usr/share/crio/crictl.yaml", "usr/share/crio/containers/policy.json", "usr/libexec/crio/runc"},
		upholds:  []string{"multi-user.target crio.service"}},
	{name: "docker-compose", version: "2.30.3", programs: []string{"docker-compose", "../libexec/docker/cli-plugins/docker-compose"}},
	{name: "docker-buildx", version: "0.18.0", programs: []string{"../libexec/docker/cli-plugins/docker-buildx"}},
	{name: "wasmcloud", version: "1.4.0", programs: []string{"wasmcloud", "nats-server"},
		paths:   []string{"usr/share/wasmcloud/nats.conf"},
		upholds: []string{"multi-user.target nats.service", "multi-user.target wasmcloud.service"}},
	{name: "nebula", version: "1.9.4", programs: []string{"nebula", "nebula-cert"}, upholds: []string{"multi-user.target nebula.service"}},
	{name: "cilium", version: "0.16.20", programs: []string{"cilium"}},
	{name: "consul", version: "1.20.1", programs: []string{"consul"}, paths: []string{"usr/share/consul/consul.d/consul.hcl", "usr/lib/sysusers.d/consul.conf"}},
	{name: "vault", version: "1.18.2", programs: []string{"vault"}, paths: []string{"usr/share/vault/vault.d/vault.hcl", "usr/lib/sysusers.d/vault.conf", "usr/lib/tmpfiles.d/vault.conf"}},
}, {
	// kubectl, crictl and ctr are links to k3s (which prints "k3s fixture").
	{name: "k3s", version: "v1.31.2+k3s1", programs: []string{"k3s"},
		paths: []string{"usr/bin/kubectl", "usr/bin/crictl", "usr/bin/ctr", "usr/lib/systemd/system/k3s.service", "usr/lib/systemd/system/k3s-agent.service"}},
}}

func bakeOne(t testing.TB, u *upstream, c bakeCase, out, cache string) *BakeResult {
	t.Helper()
	r, err := Lookup(c.name)
	if err != nil {
		t.Fatal(err)
	}
	res, err := Bake(context.Background(), BakeOptions{
		Recipe:   r,
		Resolve:  ResolveOptions{Version: c.version, Arch: "x86-64", Options: c.options, SHA256: c.pins},
		Output:   out,
		CacheDir: cache,
		Mirror:   u.mirror(),
		Digest:   true, // the tests compare images by digest
	})
	if err != nil {
		t.Fatalf("bake %s: %v", c.name, err)
	}
	return res
}

// TestBakeMergeAndRun bakes catalog recipes from upstream-shaped fixtures
// served through --mirror, merges all the images with the real
// systemd-sysext in a private mount namespace, runs their programs and
// finds their units, drop-ins and configs where systemd looks.
func TestBakeMergeAndRun(t *testing.T) {
	testenv.RequireTool(t, "mksquashfs")
	testenv.RequireRoot(t)
	cache := testenv.TempDirNoLeak(t, ".#")
	for i, group := range mergeGroups {
		t.Run(fmt.Sprint("group", i), func(t *testing.T) { mergeGroup(t, group, cache) })
	}
}

func mergeGroup(t *testing.T, cases []bakeCase, cache string) {
	u := newUpstream(t)
	out := testenv.TempDirNoLeak(t, ".#")
	active := t.TempDir()
	var images []string
	var script strings.Builder
	for _, c := range cases {
		c = addFixtures(t, u, c)
		res := bakeOne(t, u, c, out, cache)
		if want := filepath.Join(out, extension.FileName(c.name, c.version, "x86-64")); res.Image.Path != want {
			t.Errorf("%s: image at %s, want %s", c.name, res.Image.Path, want)
		}
		// systemd-sysext wants the file named after the extension-release
		// suffix: NAME.raw, as the activation link is on a node.
		link := filepath.Join(active, c.name+".raw")
		if err := os.Link(res.Image.Path, link); err != nil {
			t.Fatal(err)
		}
		images = append(images, link)
		for _, p := range c.programs {
			script.WriteString("/usr/bin/" + p + "\n")
		}
		for _, p := range c.paths {
			script.WriteString("test -e /" + p + " && echo \"present " + p + "\"\n")
		}
		script.WriteString("grep -h '^Upholds=' /usr/lib/systemd/system/*.target.d/" + c.name + "-*.conf 2>/dev/null | sed 's/^/" + c.name + " /' || true\n")
		script.WriteString("sed -n 's/^EXTENSION_RELOAD_MANAGER=/" + c.name + " reload=/p' /usr/lib/extension-release.d/extension-release." + c.name + "\n")
	}
	for _, c := range cases {
		for _, up := range c.upholds {
			target, unit, _ := strings.Cut(up, " ")
			script.WriteString("grep -q '^Upholds=" + unit + "$' /usr/lib/systemd/system/" + target + ".d/" + c.name + "-" + unit + ".conf && echo \"upheld " + up + "\"\n")
		}
	}
	got, err := testenv.MergeAndRun(t, images, script.String())
	if err != nil {
		t.Fatalf("merge: %v\n%s", err, got)
	}
	for _, c := range cases {
		for _, p := range c.programs {
			if want := filepath.Base(p) + " fixture "; !strings.Contains(got, want) {
				t.Errorf("%s: %s did not run from the merged /usr:\n%s", c.name, p, got)
			}
		}
		for _, p := range c.paths {
			if !strings.Contains(got, "present "+p+"\n") {
				t.Errorf("%s: /%s is not in the merged /usr:\n%s", c.name, p, got)
			}
		}
		for _, up := range c.upholds {
			if !strings.Contains(got, "upheld "+up+"\n") {
				t.Errorf("%s: no Upholds= drop-in for %s:\n%s", c.name, up, got)
			}
		}
		// Nothing else is upheld: only what the recipe enables.
		if n := strings.Count(got, "\n"+c.name+" Upholds="); n != len(c.upholds) {
			t.Errorf("%s: %d Upholds= drop-ins, want %d:\n%s", c.name, n, len(c.upholds), got)
		}
		shipsUnits := c.name != "wasmtime" && c.name != "cilium" && c.name != "docker-compose" && c.name != "docker-buildx"
		if reload := strings.Contains(got, c.name+" reload=1"); reload != shipsUnits {
			t.Errorf("%s: EXTENSION_RELOAD_MANAGER=1 is %v, want %v (ships units: %v):\n%s", c.name, reload, shipsUnits, shipsUnits, got)
		}
	}
}

// TestBakeTailscaleContents checks one image's layout in detail: the
// tmpfiles.d line that copies the default config, and the unit's paths.
func TestBakeTailscaleContents(t *testing.T) {
	testenv.RequireTool(t, "mksquashfs")
	unsquashfs := testenv.RequireTool(t, "unsquashfs")
	u := newUpstream(t)
	out := testenv.TempDirNoLeak(t, ".#")
	c := addFixtures(t, u, bakeCase{name: "tailscale", version: "1.76.6"})
	res := bakeOne(t, u, c, out, t.TempDir())
	tmpfiles := catImage(t, unsquashfs, res.Image.Path, "usr/lib/tmpfiles.d/tailscale.conf")
	if !strings.Contains(tmpfiles, "C /etc/default/tailscaled - - - - /usr/share/tailscale/default/tailscaled\n") {
		t.Errorf("tmpfiles.d does not copy the default config:\n%s", tmpfiles)
	}
	if got := catImage(t, unsquashfs, res.Image.Path, "usr/share/tailscale/default/tailscaled"); got != "PORT=\"41641\"\nFLAGS=\"\"\n" {
		t.Errorf("default config is %q, want the upstream's tailscaled.defaults", got)
	}
	if unit := catImage(t, unsquashfs, res.Image.Path, "usr/lib/systemd/system/tailscaled.service"); !strings.Contains(unit, "ExecStart=/usr/bin/tailscaled") || !strings.Contains(unit, "--port=${PORT}") {
		t.Errorf("unit content changed on the way:\n%s", unit)
	}
}

func catImage(t testing.TB, unsquashfs, image, path string) string {
	t.Helper()
	data, err := runTool(unsquashfs, "-cat", image, path)
	if err != nil {
		t.Fatalf("unsquashfs -cat %s: %v\n%s", path, err, data)
	}
	return string(data)
}

// TestBakeCachedOffline: a second bake of the same version needs no
// network at all, even for downloads checked against a checksum file, and
// gives the same image, which is also the image of the tree laid out
// straight from the archive (linking files from the unpacked cache changes
// nothing in the image).
func TestBakeCachedOffline(t *testing.T) {
	testenv.RequireTool(t, "mksquashfs")
	u := newUpstream(t)
	cache := testenv.TempDirNoLeak(t, ".#")
	c := addFixtures(t, u, bakeCase{name: "ollama", version: "0.4.2"})
	first := bakeOne(t, u, c, t.TempDir()+"/", cache)
	u.srv.Close()
	second := bakeOne(t, u, c, t.TempDir()+"/", cache)
	if first.Image.Digest != second.Image.Digest {
		t.Errorf("cached bake gave %s, first bake %s", second.Image.Digest, first.Image.Digest)
	}
	ctx := context.Background()
	d := first.Plan.Downloads[0]
	blob, err := (&Fetcher{CacheDir: cache}).Fetch(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Dir(blob) != filepath.Join(cache, "blobs", "sha256") {
		t.Fatalf("blob at %s", blob)
	}
	tree := t.TempDir()
	hasUnits, err := first.Plan.Layout(ctx, tree, map[string]string{d.ID: blob})
	if err != nil || !hasUnits {
		t.Fatal(hasUnits, err)
	}
	res, err := builder.Build(ctx, builder.Options{Tree: tree, Meta: first.Image.Meta, Enable: first.Plan.Enabled(), Output: t.TempDir() + "/", Digest: true})
	if err != nil {
		t.Fatal(err)
	}
	if res.Digest != first.Image.Digest {
		t.Errorf("the tree laid out from the archive builds %s, the bake %s", res.Digest, first.Image.Digest)
	}
}

// TestCatalogBakesFromDerivedFixtures bakes every catalog recipe for both
// architectures from fixtures derived from its own archive paths: it
// proves the recipes are internally consistent (every rule matches,
// nothing is placed twice, every enabled unit is shipped) and that the
// builder accepts their trees. The upstream layouts themselves are checked
// by the hand-made fixtures above.
func TestCatalogBakesFromDerivedFixtures(t *testing.T) {
	testenv.RequireTool(t, "mksquashfs")
	all, err := Catalog()
	if err != nil {
		t.Fatal(err)
	}
	cache := t.TempDir()
	for _, r := range all {
		for _, arch := range []extension.Arch{"x86-64", "arm64"} {
			t.Run(r.Name+"/"+string(arch), func(t *testing.T) {
				p, err := r.Resolve(ResolveOptions{Version: r.Version.Example, Arch: arch})
				if err != nil {
					t.Fatal(err)
				}
				u := newUpstream(t)
				pins := map[string]string{}
				for _, d := range p.Downloads {
					var ms []member
					for _, f := range p.Files {
						if f.Content == "" && f.Download == d.ID && f.From != "" {
							ms = append(ms, exe(derivedName(f.From), script(d.ID, p.Version)))
						}
					}
					for _, c := range p.Configs {
						if c.Content == "" && c.Download == d.ID {
							ms = append(ms, file(c.From, "# default\n"))
						}
					}
					var data []byte
					switch d.Format {
					case "tar.gz":
						data = tgz(t, ms...)
					case "tar.xz":
						data = txz(t, ms...)
					case "zip":
						data = zipOf(t, ms...)
					case "file":
						data = []byte(script(d.ID, p.Version))
					default:
						t.Fatalf("no derived fixture for format %s", d.Format)
					}
					u.add(d.URL, data)
					pins[d.ID] = sum(data)
				}
				_, err = Bake(context.Background(), BakeOptions{
					Recipe:   r,
					Resolve:  ResolveOptions{Version: r.Version.Example, Arch: arch, SHA256: pins},
					Output:   t.TempDir() + "/",
					CacheDir: cache,
					Mirror:   u.mirror(),
				})
				if err != nil {
					t.Fatal(err)
				}
			})
		}
	}
}

// derivedName turns an archive path or glob into a member name it matches.
func derivedName(from string) string {
	if strings.HasSuffix(from, "/") {
		return from + "fixture"
	}
	return strings.NewReplacer("*", "x", "?", "x").Replace(from)
}

func runTool(name string, args ...string) ([]byte, error) {
	return exec.Command(name, args...).CombinedOutput()
}

// TestBakeFromDirectoryMirror: an air-gapped mirror is a directory holding
// the files under HOST/PATH.
func TestBakeFromDirectoryMirror(t *testing.T) {
	testenv.RequireTool(t, "mksquashfs")
	u := newUpstream(t)
	c := addFixtures(t, u, bakeCase{name: "k3s", version: "v1.31.2+k3s1"})
	mirror := t.TempDir()
	u.mu.Lock()
	files := u.files
	u.mu.Unlock()
	for url, data := range files {
		p := filepath.Join(mirror, strings.TrimPrefix(url, "https://"))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	r, _ := Lookup("k3s")
	res, err := Bake(context.Background(), BakeOptions{Recipe: r, Resolve: ResolveOptions{Version: c.version, Arch: "x86-64"}, Output: t.TempDir() + "/", CacheDir: t.TempDir(), Mirror: "file://" + mirror})
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Base(res.Image.Path) != "k3s-v1.31.2+k3s1-x86-64.raw" {
		t.Errorf("image %s", res.Image.Path)
	}
	if n := u.count("https://github.com/k3s-io/k3s/releases/download/v1.31.2+k3s1/k3s"); n != 0 {
		t.Errorf("the HTTP server was asked %d times", n)
	}
}

// TestBakeCacheOnAnotherFilesystem: files are copied, not linked, when the
// cache and the output are on different filesystems, and the image is the
// same.
func TestBakeCacheOnAnotherFilesystem(t *testing.T) {
	testenv.RequireTool(t, "mksquashfs")
	shm, err := os.MkdirTemp("/dev/shm", "sysext-recipe-test-")
	if err != nil {
		t.Skip("no /dev/shm to put the cache on another filesystem")
	}
	t.Cleanup(func() { os.RemoveAll(shm) })
	u := newUpstream(t)
	c := addFixtures(t, u, bakeCase{name: "ollama", version: "0.4.2"})
	far := bakeOne(t, u, c, t.TempDir()+"/", shm)
	near := bakeOne(t, u, c, t.TempDir()+"/", t.TempDir())
	if far.Image.Digest != near.Image.Digest {
		t.Errorf("cache on another filesystem gives %s, on the same %s", far.Image.Digest, near.Image.Digest)
	}
}
