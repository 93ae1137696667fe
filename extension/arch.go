package extension

import (
	"fmt"
	"runtime"
	"sort"
	"strings"
)

// Arch is an architecture in systemd's naming (ConditionArchitecture=,
// ARCHITECTURE=): "x86-64", "arm64", ...; AnyArch matches every host.
type Arch string

// AnyArch is ARCHITECTURE=_any.
const AnyArch Arch = AnyID

// archInfo maps one systemd architecture to its OCI platform and to the
// names upstream downloads use.
type archInfo struct {
	systemd  Arch
	goarch   string // OCI platform architecture (GOARCH)
	variant  string // OCI platform variant
	upstream string // uname -m style, as release tarballs name it
	aliases  []string
}

var archTable = []archInfo{
	{"x86-64", "amd64", "", "x86_64", []string{"x86_64", "amd64", "x64"}},
	{"x86", "386", "", "i686", []string{"i386", "i486", "i586", "i686", "386"}},
	{"arm64", "arm64", "", "aarch64", []string{"aarch64", "arm64"}},
	{"arm", "arm", "v7", "armv7l", []string{"armv7l", "armv7", "armhf", "arm/v7", "armv6l", "arm"}},
	{"riscv64", "riscv64", "", "riscv64", []string{"riscv64"}},
	{"ppc64-le", "ppc64le", "", "ppc64le", []string{"ppc64le"}},
	{"ppc64", "ppc64", "", "ppc64", []string{"ppc64"}},
	{"s390x", "s390x", "", "s390x", []string{"s390x"}},
	{"loongarch64", "loong64", "", "loongarch64", []string{"loongarch64", "loong64"}},
	{"mips64-le", "mips64le", "", "mips64el", []string{"mips64le", "mips64el"}},
	{"mips64", "mips64", "", "mips64", []string{"mips64"}},
	{"mips-le", "mipsle", "", "mipsel", []string{"mipsle", "mipsel"}},
	{"mips", "mips", "", "mips", []string{"mips"}},
}

func lookupArch(a Arch) (archInfo, bool) {
	for _, i := range archTable {
		if i.systemd == a {
			return i, true
		}
	}
	return archInfo{}, false
}

// Architectures lists the systemd architecture names we know, sorted.
func Architectures() []Arch {
	out := make([]Arch, 0, len(archTable))
	for _, i := range archTable {
		out = append(out, i.systemd)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// ParseArch accepts a systemd name, an OCI platform ("amd64", "linux/arm64",
// "arm/v7") or an upstream name ("x86_64", "aarch64") and returns the
// systemd name. "_any" is accepted.
func ParseArch(s string) (Arch, error) {
	if s == AnyID {
		return AnyArch, nil
	}
	if _, ok := lookupArch(Arch(s)); ok {
		return Arch(s), nil
	}
	t := strings.TrimPrefix(s, "linux/")
	for _, i := range archTable {
		if t == i.goarch || (i.variant != "" && t == i.goarch+"/"+i.variant) {
			return i.systemd, nil
		}
		for _, a := range i.aliases {
			if t == a {
				return i.systemd, nil
			}
		}
	}
	names := make([]string, 0, len(archTable))
	for _, a := range Architectures() {
		names = append(names, string(a))
	}
	return "", fmt.Errorf("unknown architecture %q: use one of %s, or _any", s, strings.Join(names, ", "))
}

// HostArch returns the architecture this binary runs on, in systemd naming.
func HostArch() Arch {
	for _, i := range archTable {
		if i.goarch == runtime.GOARCH {
			return i.systemd
		}
	}
	return Arch(runtime.GOARCH)
}

// Valid reports whether a is a known systemd architecture or _any.
func (a Arch) Valid() bool {
	if a == AnyArch {
		return true
	}
	_, ok := lookupArch(a)
	return ok
}

// OCIPlatform returns the OCI platform architecture and variant ("arm", "v7").
// For _any it returns ("", "").
func (a Arch) OCIPlatform() (architecture, variant string) {
	i, ok := lookupArch(a)
	if !ok {
		return "", ""
	}
	return i.goarch, i.variant
}

// Upstream returns the uname -m style name ("x86_64", "aarch64").
func (a Arch) Upstream() string {
	i, ok := lookupArch(a)
	if !ok {
		return string(a)
	}
	return i.upstream
}

// FromOCIPlatform maps an OCI platform architecture (variant ignored) to
// systemd naming.
func FromOCIPlatform(architecture, _ string) (Arch, error) {
	for _, i := range archTable {
		// systemd has one "arm" for every 32-bit variant, so the variant only
		// matters on the way out.
		if i.goarch == architecture {
			return i.systemd, nil
		}
	}
	return "", fmt.Errorf("OCI platform architecture %q has no systemd architecture name", architecture)
}
