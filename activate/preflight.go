package activate

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/sysext/sysext/extension"
	"github.com/sysext/sysext/fsimage"
)

// Severity says what a preflight finding does to the operation.
type Severity string

const (
	// Warn is printed; with --strict it refuses like Refuse.
	Warn Severity = "warning"
	// Refuse stops the operation before anything is touched.
	Refuse Severity = "refused"
)

// Check names, stable for --json and tests.
const (
	CheckFilesystem = "filesystem"
	CheckOverlay    = "overlayfs"
	CheckStacking   = "stacking"
	CheckSystemd    = "systemd"
	// CheckVerity (verity.go): can this host enforce a disk image's
	// dm-verity and signature.
)

// Finding is one reason an extension might not merge on this system.
type Finding struct {
	Check     string   `json:"check"`
	Severity  Severity `json:"severity"`
	Extension string   `json:"extension,omitempty"` // "" when it concerns every extension
	Cause     string   `json:"cause"`
	Fix       string   `json:"fix"` // the way out
}

func (f Finding) String() string {
	s := f.Cause
	if f.Extension != "" {
		s = f.Extension + ": " + s
	}
	return s + "; way out: " + f.Fix
}

// Facts is the part of a system the preflight judges. Gather reads it from
// the running system; tests build it by hand.
type Facts struct {
	// Filesystems are the names in /proc/filesystems.
	Filesystems map[string]bool
	// Modules are the filesystem modules the running kernel can load or has
	// built in ("squashfs", "erofs", "overlay"), from /lib/modules/$(uname -r).
	Modules map[string]bool
	// Stacking is what /proc/self/mountinfo says about /usr and /etc.
	Stacking Stacking
	// SystemdVersion is the target root's systemd; 0 when unknown, and
	// SystemdUnknown then says why. It is warned about only when an
	// extension needs a version check (EXTENSION_RELOAD_MANAGER, EROFS).
	SystemdVersion int
	SystemdUnknown string
	// Offline is set when the target is another root (--root): the running
	// kernel and mounts are not the ones that will merge, so what the kernel
	// lacks only warns and the mount table is not judged.
	Offline bool
	// Unknown lists facts that could not be read, as "what: why".
	Unknown []string
	// Verity is the kernel's and systemd's support for enforcing signed
	// disk images (verity.go).
	Verity VerityFacts
	// Kernel is the running kernel's release and configuration, for the
	// EROFS compressors (erofscomp.go).
	Kernel KernelFacts
}

// System says where Gather reads the facts; the zero value is the running
// system, and every path can be pointed at a test file.
type System struct {
	// Root is the target root ("" or "/" for the running system).
	Root string
	// ProcFilesystems defaults to /proc/filesystems.
	ProcFilesystems string
	// MountInfo defaults to /proc/self/mountinfo.
	MountInfo string
	// ModulesDir defaults to /lib/modules/$(uname -r) of the running kernel.
	ModulesDir string
	// SystemdVersion, when not 0, is used instead of looking in Root.
	SystemdVersion int
	// ProcMisc defaults to /proc/misc, SysModule to /sys/module, SysBlock
	// to /sys/block (where device-mapper, dm-verity and its devices show).
	ProcMisc  string
	SysModule string
	SysBlock  string
	// KernelRelease replaces uname -r; KernelConfig is the kernel's
	// configuration (default /proc/config.gz, else /boot/config-RELEASE).
	KernelRelease string
	KernelConfig  string
}

func (s System) offline() bool { return s.Root != "" && filepath.Clean(s.Root) != "/" }

// Gather reads the facts the preflight needs. What cannot be read is noted
// in Facts.Unknown (and warned about), never fatal: a preflight that cannot
// look must not stop a node that works.
func Gather(ctx context.Context, sys System) Facts {
	f := Facts{Filesystems: map[string]bool{}, Modules: map[string]bool{}, Offline: sys.offline()}
	path := sys.ProcFilesystems
	if path == "" {
		path = "/proc/filesystems"
	}
	if data, err := readFileLimited(path, 1<<20); err != nil {
		f.Unknown = append(f.Unknown, fmt.Sprintf("kernel filesystems: %v", err))
	} else {
		f.Filesystems = parseFilesystems(data)
	}
	mods := sys.ModulesDir
	if mods == "" {
		if rel, err := kernelRelease(); err == nil {
			mods = filepath.Join("/lib/modules", rel)
		}
	}
	f.Modules = kernelModules(mods, "squashfs", "erofs", "overlay") // module names are the filesystems'
	path = sys.MountInfo
	if path == "" {
		path = "/proc/self/mountinfo"
	}
	if data, err := readFileLimited(path, 16<<20); err != nil {
		f.Unknown = append(f.Unknown, fmt.Sprintf("mount table: %v", err))
	} else if mounts, err := ParseMountInfo(data); err != nil {
		f.Unknown = append(f.Unknown, fmt.Sprintf("mount table %s: %v", path, err))
	} else {
		f.Stacking = AnalyzeStacking(mounts)
	}
	f.SystemdVersion = sys.SystemdVersion
	if f.SystemdVersion == 0 {
		v, err := SystemdVersion(sys.Root)
		if err != nil {
			f.SystemdUnknown = err.Error()
		}
		f.SystemdVersion = v
	}
	f.Verity = GatherVerity(sys, mods, f.SystemdVersion)
	f.Kernel = gatherKernel(sys)
	return f
}

func parseFilesystems(data []byte) map[string]bool {
	out := map[string]bool{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) > 0 {
			out[f[len(f)-1]] = true // "nodev\toverlay" or "\tsquashfs"
		}
	}
	return out
}

func kernelRelease() (string, error) {
	var u syscall.Utsname
	if err := syscall.Uname(&u); err != nil {
		return "", err
	}
	b := make([]byte, 0, len(u.Release))
	for _, c := range u.Release {
		if c == 0 {
			break
		}
		b = append(b, byte(c))
	}
	return string(b), nil
}

// Image is what the preflight needs to know about one extension: its
// filesystem and its metadata (from the image, or from the manifest's
// annotations before the download).
type Image struct {
	Name   string
	Format fsimage.Format // "" when not known yet: no filesystem check
	// Compression lists an EROFS image's compressors (the manifest's
	// annotation, or the image's superblock); nil when unknown.
	Compression []string
	Meta        extension.Metadata
	// Verity describes a disk image's verity (nil: none known).
	Verity *ImageVerity
}

// Report is the preflight's verdict.
type Report struct {
	Strict   bool      `json:"strict"`
	Findings []Finding `json:"findings"`
	// Verity is what this host offers to enforce signed disk images.
	Verity *VerityFacts `json:"verity,omitempty"`
}

// Refusals are the findings that stop the operation (warnings too under
// Strict).
func (r *Report) Refusals() []Finding {
	var out []Finding
	for _, f := range r.Findings {
		if f.Severity == Refuse || r.Strict {
			out = append(out, f)
		}
	}
	return out
}

// Warnings are the findings that do not stop the operation.
func (r *Report) Warnings() []Finding {
	if r.Strict {
		return nil
	}
	var out []Finding
	for _, f := range r.Findings {
		if f.Severity == Warn {
			out = append(out, f)
		}
	}
	return out
}

// Err is a *PreflightError when the operation must stop, nil otherwise.
func (r *Report) Err() error {
	if ref := r.Refusals(); len(ref) > 0 {
		return &PreflightError{Refusals: ref, Strict: r.Strict}
	}
	return nil
}

// PreflightError lists why the preflight refused; nothing was touched.
type PreflightError struct {
	Refusals []Finding
	Strict   bool
}

func (e *PreflightError) Error() string {
	parts := make([]string, len(e.Refusals))
	for i, f := range e.Refusals {
		parts[i] = f.String()
	}
	s := "preflight refused, nothing was changed: " + strings.Join(parts, "; ")
	if e.Strict {
		s += " (--strict turns warnings into refusals)"
	}
	return s
}

// Preflight judges whether the images can merge on the system the facts
// describe. It is pure: every input is in its arguments.
func Preflight(f Facts, images []Image, strict bool) *Report {
	vf := f.Verity
	r := &Report{Strict: strict, Findings: []Finding{}, Verity: &vf}
	add := func(check string, sev Severity, ext, cause, fix string) {
		if f.Offline && sev == Refuse && (check == CheckFilesystem || check == CheckOverlay || check == CheckVerity) {
			// The kernel that boots the target root is not the running one.
			sev = Warn
			cause += " (on the running kernel; the target root boots its own)"
		}
		r.Findings = append(r.Findings, Finding{Check: check, Severity: sev, Extension: ext, Cause: cause, Fix: fix})
	}
	for _, u := range f.Unknown {
		add("unknown", Warn, "", "could not check "+u, "without --strict sysext goes on and still proves the merge after the refresh")
	}
	known := len(f.Filesystems) > 0
	if known && !f.Filesystems["overlay"] && !f.Modules["overlay"] {
		add(CheckOverlay, Refuse, "", "the kernel has no overlayfs (not in /proc/filesystems, no overlay module)",
			"load it with 'modprobe overlay' or boot a kernel with CONFIG_OVERLAY_FS")
	}
	seen := map[fsimage.Format]bool{}
	var needVersion []string // what could not be checked against the systemd version
	for _, img := range images {
		name := img.Name
		if name == "" {
			name = img.Meta.Name
		}
		if fs := kernelFS(img.Format); fs != "" && known && !f.Filesystems[fs] && !f.Modules[fs] && !seen[img.Format] {
			seen[img.Format] = true
			add(CheckFilesystem, Refuse, name, fmt.Sprintf("the kernel cannot mount %s (not in /proc/filesystems, no %s module under /lib/modules/$(uname -r))", img.Format, fs),
				fmt.Sprintf("load it with 'modprobe %s', boot a kernel that has it, or rebuild the extension with 'sysext build --format %s'", fs, otherFormat(img.Format)))
		}
		erofsCompressorFindings(f.Kernel, img, name, add)
		if img.Format == fsimage.GPT && img.Verity == nil {
			add(CheckFilesystem, Warn, name, "a GPT disk image: its partitions' filesystems are not checked", "the merge is still proven after the refresh")
		}
		verityFindings(f, img, name, add)
		v := f.SystemdVersion
		if v == 0 && img.Meta.ReloadManager {
			needVersion = appendOnce(needVersion, fmt.Sprintf("%s's EXTENSION_RELOAD_MANAGER=1 (systemd %d)", name, SystemdReloadManager))
		}
		if v == 0 && img.Format == fsimage.EROFS {
			needVersion = appendOnce(needVersion, fmt.Sprintf("%s's EROFS image (systemd %d)", name, SystemdEROFSVerified))
		}
		if img.Meta.ReloadManager && v > 0 && v < SystemdReloadManager {
			add(CheckSystemd, Warn, name, fmt.Sprintf("EXTENSION_RELOAD_MANAGER=1 needs systemd %d or later, the target has %d: its units will not be loaded after the merge", SystemdReloadManager, v),
				"run 'systemctl daemon-reload' after the merge, or upgrade systemd")
		}
		if img.Format == fsimage.EROFS && v > 0 && v < SystemdEROFSVerified {
			add(CheckSystemd, Warn, name, fmt.Sprintf("EROFS images are known to merge from systemd %d on, the target has %d", SystemdEROFSVerified, v),
				"rebuild the extension with 'sysext build --format squashfs'")
		}
	}
	if len(needVersion) > 0 {
		why := f.SystemdUnknown
		if why == "" {
			why = "unknown"
		}
		add(CheckSystemd, Warn, "", fmt.Sprintf("could not check the systemd version that %s needs: %s", strings.Join(needVersion, " and "), why),
			"without --strict sysext goes on and still proves the merge after the refresh")
	}
	st := f.Stacking
	switch {
	case f.Offline:
		// The running system's mounts say nothing about how the target
		// root will boot.
	case st.Depth() >= 2:
		add(CheckStacking, Warn, "", fmt.Sprintf("/usr already sits on %d stacked overlays (%s): the kernel stacks at most 2 filesystems, so systemd-sysext's overlay will likely fail ('maximum fs stacking depth exceeded') and unmerge every extension", st.Depth(), strings.Join(st.UsrLayers, ", ")),
			"merge extensions from the initrd (systemd-sysext-sysroot.service), or boot without the transient root")
	case st.Depth() == 1 && st.EtcOverlay != "":
		add(CheckStacking, Warn, "", fmt.Sprintf("/usr sits on an overlay (%s) and /etc is a transient overlay (%s), as on bootc and Silverblue: the merge is at the kernel's stacking limit and fails with some kernels", st.UsrLayers[0], st.EtcOverlay),
			"merge extensions from the initrd (systemd-sysext-sysroot.service)")
	}
	return r
}

func appendOnce(list []string, s string) []string {
	for _, x := range list {
		if x == s {
			return list
		}
	}
	return append(list, s)
}

// kernelFS is the kernel's name for an image format ("" for none we check).
func kernelFS(f fsimage.Format) string {
	switch f {
	case fsimage.Squashfs:
		return "squashfs"
	case fsimage.EROFS:
		return "erofs"
	}
	return ""
}

func otherFormat(f fsimage.Format) string {
	if f == fsimage.EROFS {
		return "squashfs"
	}
	return "erofs"
}

// Check gathers the facts of sys and judges the images: the function the
// node calls before pull, update and sync touch anything, and what `sysext
// check --preflight` prints.
func Check(ctx context.Context, sys System, images []Image, strict bool) *Report {
	return Preflight(Gather(ctx, sys), images, strict)
}
