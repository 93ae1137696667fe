package flix

import (
	"bufio"
	"bytes"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strings"

	"github.com/sysext/sysext/extension"
	"github.com/sysext/sysext/internal/extract"
)

// ErrNotELF is returned for a program that is not an ELF file.
var ErrNotELF = errors.New("not an ELF executable")

// elfInfo is what bundling needs to know about one ELF file.
type elfInfo struct {
	machine elf.Machine
	class   elf.Class
	order   string // "le" or "be"
	interp  string // PT_INTERP, "" when none
	needed  []string
	rpath   []string // DT_RPATH entries
	runpath []string // DT_RUNPATH entries
}

// static reports a program that needs nothing from the outside.
func (e *elfInfo) static() bool { return e.interp == "" && len(e.needed) == 0 }

// readELF reads p's dynamic section. A script gets an error saying so.
func readELF(p string) (*elfInfo, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	head := make([]byte, 128)
	n, _ := io.ReadFull(f, head)
	head = head[:n]
	if bytes.HasPrefix(head, []byte("#!")) {
		line, _, _ := strings.Cut(string(head[2:]), "\n")
		return nil, fmt.Errorf("%w: it is a script (#!%s)", ErrNotELF, strings.TrimSpace(line))
	}
	if !bytes.HasPrefix(head, []byte(elf.ELFMAG)) {
		return nil, ErrNotELF
	}
	ef, err := elf.NewFile(f)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNotELF, err)
	}
	defer ef.Close()
	info := &elfInfo{machine: ef.Machine, class: ef.Class, order: "le"}
	if ef.ByteOrder.String() == "BigEndian" {
		info.order = "be"
	}
	for _, p := range ef.Progs {
		if p.Type == elf.PT_INTERP {
			b, err := io.ReadAll(io.LimitReader(p.Open(), 4096))
			if err != nil {
				return nil, fmt.Errorf("read interpreter: %w", err)
			}
			info.interp = strings.TrimRight(string(b), "\x00")
		}
	}
	if ef.Section(".dynamic") == nil && !hasDynamic(ef) {
		return info, nil
	}
	if info.needed, err = ef.DynString(elf.DT_NEEDED); err != nil {
		return nil, fmt.Errorf("read DT_NEEDED: %w", err)
	}
	for _, t := range []struct {
		tag elf.DynTag
		dst *[]string
	}{{elf.DT_RPATH, &info.rpath}, {elf.DT_RUNPATH, &info.runpath}} {
		vs, err := ef.DynString(t.tag)
		if err != nil {
			return nil, err
		}
		for _, v := range vs {
			for _, d := range strings.Split(v, ":") {
				if d != "" {
					*t.dst = append(*t.dst, d)
				}
			}
		}
	}
	return info, nil
}

func hasDynamic(ef *elf.File) bool {
	for _, p := range ef.Progs {
		if p.Type == elf.PT_DYNAMIC {
			return true
		}
	}
	return false
}

// elfArch is the ELF identity of a systemd architecture.
type elfArch struct {
	machine elf.Machine
	class   elf.Class
	order   string
	triplet string // Debian multiarch directory
}

var elfArches = map[extension.Arch]elfArch{
	"x86-64":      {elf.EM_X86_64, elf.ELFCLASS64, "le", "x86_64-linux-gnu"},
	"x86":         {elf.EM_386, elf.ELFCLASS32, "le", "i386-linux-gnu"},
	"arm64":       {elf.EM_AARCH64, elf.ELFCLASS64, "le", "aarch64-linux-gnu"},
	"arm":         {elf.EM_ARM, elf.ELFCLASS32, "le", "arm-linux-gnueabihf"},
	"riscv64":     {elf.EM_RISCV, elf.ELFCLASS64, "le", "riscv64-linux-gnu"},
	"ppc64-le":    {elf.EM_PPC64, elf.ELFCLASS64, "le", "powerpc64le-linux-gnu"},
	"ppc64":       {elf.EM_PPC64, elf.ELFCLASS64, "be", "powerpc64-linux-gnu"},
	"s390x":       {elf.EM_S390, elf.ELFCLASS64, "be", "s390x-linux-gnu"},
	"loongarch64": {elf.EM_LOONGARCH, elf.ELFCLASS64, "le", "loongarch64-linux-gnu"},
	"mips64-le":   {elf.EM_MIPS, elf.ELFCLASS64, "le", "mips64el-linux-gnuabi64"},
	"mips64":      {elf.EM_MIPS, elf.ELFCLASS64, "be", "mips64-linux-gnuabi64"},
	"mips-le":     {elf.EM_MIPS, elf.ELFCLASS32, "le", "mipsel-linux-gnu"},
	"mips":        {elf.EM_MIPS, elf.ELFCLASS32, "be", "mips-linux-gnu"},
}

func (a elfArch) matches(e *elfInfo) bool {
	return e.machine == a.machine && e.class == a.class && e.order == a.order
}

// describe names an ELF file's architecture for error messages.
func (e *elfInfo) describe() string {
	for name, a := range elfArches {
		if a.matches(e) {
			return string(name)
		}
	}
	return fmt.Sprintf("%v %v", e.machine, e.class)
}

// searchPaths is where libraries are looked up inside a rootfs after a
// requester's own RPATH/RUNPATH: the rootfs's ld.so.conf (with its
// includes), musl's path file, then the usual directories.
func searchPaths(r *extract.Root, a elfArch) []string {
	var out []string
	seen := map[string]bool{}
	add := func(d string) {
		d = path.Clean("/" + d)
		if !seen[d] {
			seen[d] = true
			out = append(out, d)
		}
	}
	for _, d := range ldSoConf(r, "/etc/ld.so.conf", 0) {
		add(d)
	}
	// musl reads /etc/ld-musl-ARCH.path: directories separated by newlines
	// or colons.
	if matches := globIn(r, "/etc/ld-musl-*.path"); len(matches) > 0 {
		for _, m := range matches {
			if p, err := r.ResolveFile(m); err == nil {
				if b, err := os.ReadFile(r.Abs(p)); err == nil {
					for _, d := range strings.FieldsFunc(string(b), func(c rune) bool { return c == '\n' || c == ':' }) {
						if d = strings.TrimSpace(d); strings.HasPrefix(d, "/") {
							add(d)
						}
					}
				}
			}
		}
	}
	for _, d := range []string{"/lib/" + a.triplet, "/usr/lib/" + a.triplet, "/lib64", "/usr/lib64", "/lib", "/usr/lib", "/usr/local/lib"} {
		add(d)
	}
	if a.class == elf.ELFCLASS32 {
		add("/lib32")
		add("/usr/lib32")
	}
	return out
}

// ldSoConf parses an ld.so.conf inside the root: directories, and
// "include GLOB" lines whose globs are matched inside the root too.
func ldSoConf(r *extract.Root, file string, depth int) []string {
	if depth > 8 {
		return nil
	}
	p, err := r.ResolveFile(file)
	if err != nil {
		return nil
	}
	f, err := os.Open(r.Abs(p))
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line, _, _ := strings.Cut(sc.Text(), "#")
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		if rest, ok := strings.CutPrefix(line, "include"); ok && (strings.HasPrefix(rest, " ") || strings.HasPrefix(rest, "\t")) {
			for _, pat := range strings.Fields(rest) {
				if !strings.HasPrefix(pat, "/") {
					// Relative to the including file's directory as the
					// kernel sees it: not cleaned, so ".." follows symlinks.
					pat = path.Dir(file) + "/" + pat
				}
				for _, inc := range globIn(r, pat) {
					out = append(out, ldSoConf(r, inc, depth+1)...)
				}
			}
			continue
		}
		if strings.HasPrefix(line, "hwcap ") {
			continue
		}
		for _, d := range strings.FieldsFunc(line, func(c rune) bool { return c == ':' || c == ',' || c == ' ' || c == '\t' }) {
			if strings.HasPrefix(d, "/") {
				out = append(out, d)
			}
		}
	}
	return out
}

// globIn matches an absolute glob inside the root, resolving its directory
// there, and returns resolved paths. Only the last component may hold
// wildcards, as in practice.
func globIn(r *extract.Root, pat string) []string {
	dir, base := path.Split(pat)
	d, err := r.ResolveDir(dir)
	if err != nil {
		return nil
	}
	ents, err := os.ReadDir(r.Abs(d))
	if err != nil {
		return nil
	}
	var out []string
	for _, e := range ents {
		if ok, _ := path.Match(base, e.Name()); ok {
			out = append(out, path.Join("/", d, e.Name()))
		}
	}
	return out
}
