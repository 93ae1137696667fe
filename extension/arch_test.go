package extension

import (
	"runtime"
	"strings"
	"testing"
)

func TestParseArch(t *testing.T) {
	tests := map[string]Arch{
		"x86-64": "x86-64", "amd64": "x86-64", "x86_64": "x86-64", "linux/amd64": "x86-64",
		"arm64": "arm64", "aarch64": "arm64", "linux/arm64": "arm64",
		"arm": "arm", "arm/v7": "arm", "armv7l": "arm", "armhf": "arm",
		"x86": "x86", "386": "x86", "i686": "x86",
		"riscv64": "riscv64", "ppc64-le": "ppc64-le", "ppc64le": "ppc64-le",
		"s390x": "s390x", "loongarch64": "loongarch64", "loong64": "loongarch64",
		"_any": AnyArch,
	}
	for in, want := range tests {
		got, err := ParseArch(in)
		if err != nil || got != want {
			t.Errorf("ParseArch(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"", "sparc", "X86-64", "amd", "linux/", "any"} {
		_, err := ParseArch(in)
		if err == nil {
			t.Errorf("ParseArch(%q) = nil error", in)
			continue
		}
		if !strings.Contains(err.Error(), "x86-64") || !strings.Contains(err.Error(), "_any") {
			t.Errorf("ParseArch(%q) error %q does not list the valid names", in, err)
		}
	}
}

func TestArchMappingsRoundTrip(t *testing.T) {
	for _, a := range Architectures() {
		if !a.Valid() {
			t.Errorf("%s is listed but not Valid", a)
		}
		goarch, variant := a.OCIPlatform()
		if goarch == "" {
			t.Errorf("%s has no OCI platform", a)
		}
		back, err := FromOCIPlatform(goarch, variant)
		if err != nil || back != a {
			t.Errorf("FromOCIPlatform(OCIPlatform(%s)) = %s, %v", a, back, err)
		}
		if up, err := ParseArch(a.Upstream()); err != nil || up != a {
			t.Errorf("ParseArch(%s.Upstream()=%q) = %s, %v", a, a.Upstream(), up, err)
		}
		p := goarch
		if variant != "" {
			p += "/" + variant
		}
		if got, err := ParseArch("linux/" + p); err != nil || got != a {
			t.Errorf("ParseArch(linux/%s) = %s, %v; want %s", p, got, err, a)
		}
	}
	if g, v := Arch("arm").OCIPlatform(); g != "arm" || v != "v7" {
		t.Errorf("arm → %s/%s, want arm/v7", g, v)
	}
	if Arch("x86-64").Upstream() != "x86_64" || Arch("arm64").Upstream() != "aarch64" {
		t.Error("upstream names of x86-64/arm64 are wrong")
	}
	if g, v := AnyArch.OCIPlatform(); g != "" || v != "" {
		t.Errorf("_any has an OCI platform %s/%s", g, v)
	}
	if _, err := FromOCIPlatform("sparc64", ""); err == nil {
		t.Error("FromOCIPlatform(sparc64) = nil error")
	}
}

func TestHostArch(t *testing.T) {
	h := HostArch()
	if !h.Valid() {
		t.Fatalf("HostArch() = %q is not valid", h)
	}
	if g, _ := h.OCIPlatform(); g != runtime.GOARCH {
		t.Fatalf("HostArch() = %s maps back to %s, not %s", h, g, runtime.GOARCH)
	}
}
