package activate

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/sysext/sysext/atomicfile"
	"github.com/sysext/sysext/fsimage"
	"github.com/sysext/sysext/verity"
)

// Handing a signed disk image's protection over to systemd and the
// kernel: the trusted certificate goes where systemd looks for it, the
// image policy makes an unsigned or badly signed image fail to merge, and
// the preflight and status say whether this host enforces it. What holds
// on which host is in docs/activation.md.

// ImagePolicy is the image policy sysext sets for signed disk images: the
// root (or usr) partition must be dm-verity protected with a signature
// that verifies ("signed", which implies verity), or absent. Not
// "verity+signed": under that policy an image whose signature fails still
// merges as plain verity (kairos-io/kairos#4425).
const ImagePolicy = "root=signed+absent:usr=signed+absent"

// Versions of systemd for verity enforcement.
const (
	// SystemdImagePolicyFlag is the first systemd-sysext with
	// --image-policy=.
	SystemdImagePolicyFlag = 254
	// SystemdImagePolicyConf is the first that reads ImagePolicy= from
	// sysext.conf(5).
	SystemdImagePolicyConf = 259
	// SystemdUserspaceVerity is the oldest systemd we have seen check a
	// root hash signature in userspace against /etc/verity.d (Debian 12's
	// 252 does; tests show it).
	SystemdUserspaceVerity = 252
)

// Where sysext puts what systemd reads, under a root.
const (
	// VerityCertDir is the first of the directories systemd's userspace
	// check reads certificates from (/etc, /run, /usr/local/lib, /usr/lib
	// verity.d, files ending in .crt).
	VerityCertDir = "/etc/verity.d"
	// ImagePolicyConf is read by systemd-sysext from 259 on.
	ImagePolicyConf = "/etc/systemd/sysext.conf.d/50-sysext-signed-images.conf"
	// ImagePolicyDropIn gives the policy to systemd-sysext.service (the
	// merge at boot and `systemctl restart`) from 254 on.
	ImagePolicyDropIn = "/etc/systemd/system/systemd-sysext.service.d/50-sysext-signed-images.conf"
)

// CertificatePath is where InstallCertificate puts a certificate.
func CertificatePath(root string, cert *x509.Certificate) string {
	return filepath.Join(rootOr(root), VerityCertDir, "sysext-"+verity.Fingerprint(cert)[:16]+".crt")
}

func rootOr(root string) string {
	if root == "" {
		return "/"
	}
	return root
}

// InstallCertificate writes cert (PEM) into root's /etc/verity.d, where
// systemd's userspace signature check finds it; an identical file is left
// alone. It returns the path.
func InstallCertificate(root string, cert *x509.Certificate) (string, error) {
	p := CertificatePath(root, cert)
	data := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw})
	if old, err := os.ReadFile(p); err == nil && bytes.Equal(old, data) {
		return p, nil
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return "", fmt.Errorf("install the verity certificate: %w", err)
	}
	if err := atomicfile.WriteFile(p, data, 0o644); err != nil {
		return "", fmt.Errorf("install the verity certificate: %w", err)
	}
	return p, nil
}

// PolicyFiles returns the files SetImagePolicy writes for systemd v, as
// paths under root with their content. Before 254 systemd takes no image
// policy at all: none. For an unknown version (0) only sysext.conf.d,
// which no systemd misreads: a service drop-in with --image-policy= would
// make 252's and 253's systemd-sysext.service fail, merging nothing.
func PolicyFiles(root string, v int) map[string]string {
	out := map[string]string{}
	if v > 0 && v < SystemdImagePolicyFlag {
		return out
	}
	r := rootOr(root)
	out[filepath.Join(r, ImagePolicyConf)] = "# Written by sysext: extensions must be signed disk images (docs/activation.md).\n[SysExt]\nImagePolicy=" + ImagePolicy + "\n"
	if v == 0 {
		return out
	}
	flag := "systemd-sysext refresh --image-policy=" + ImagePolicy
	out[filepath.Join(r, ImagePolicyDropIn)] = "# Written by sysext: extensions must be signed disk images (docs/activation.md).\n" +
		"[Service]\nExecStart=\nExecStart=" + flag + "\nExecReload=\nExecReload=" + flag + "\n"
	return out
}

// SetImagePolicy writes the image policy where systemd v (of root) reads
// it: sysext.conf.d (259+; older ones ignore the file, so it holds after an
// upgrade) and a systemd-sysext.service drop-in (254+). It returns the
// files written. Systemd 252 and 253 take no policy: ErrNoImagePolicy.
func SetImagePolicy(root string, v int) ([]string, error) {
	files := PolicyFiles(root, v)
	if len(files) == 0 {
		return nil, fmt.Errorf("%w (systemd %d)", ErrNoImagePolicy, v)
	}
	var written []string
	for _, p := range sortedKeys(files) {
		if old, err := os.ReadFile(p); err == nil && string(old) == files[p] {
			continue
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return written, fmt.Errorf("set the image policy: %w", err)
		}
		if err := atomicfile.WriteFile(p, []byte(files[p]), 0o644); err != nil {
			return written, fmt.Errorf("set the image policy: %w", err)
		}
		written = append(written, p)
	}
	return written, nil
}

// ErrNoImagePolicy: this systemd cannot be told to refuse unsigned images.
var ErrNoImagePolicy = errors.New("systemd before 254 takes no image policy: an unsigned image would still merge")

// ImagePolicySet reports whether sysext's image policy is in place for
// systemd v under root.
func ImagePolicySet(root string, v int) bool {
	files := PolicyFiles(root, v)
	if len(files) == 0 {
		return false
	}
	for p := range files {
		if _, err := os.Stat(p); err != nil {
			return false
		}
	}
	return true
}

// RefreshArgs are the arguments a `systemd-sysext refresh` that sysext
// runs itself adds so the policy holds: --image-policy= from 254 to 258
// when sysext's policy is set (259 reads sysext.conf; the service drop-in
// covers `systemctl restart`).
func RefreshArgs(root string, v int) []string {
	if v >= SystemdImagePolicyFlag && v < SystemdImagePolicyConf && ImagePolicySet(root, v) {
		return []string{"--image-policy=" + ImagePolicy}
	}
	return nil
}

func sortedKeys(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// VerityFacts is what the kernel and systemd offer for verity enforcement.
type VerityFacts struct {
	// DeviceMapper: /proc/misc lists device-mapper (or its module can be
	// loaded).
	DeviceMapper bool `json:"device_mapper"`
	// DMVerity: the verity target is built in, loaded or loadable.
	DMVerity bool `json:"dm_verity"`
	// KernelSignatures: dm-verity checks root hash signatures against the
	// kernel's keyring (CONFIG_DM_VERITY_VERIFY_ROOTHASH_SIG).
	KernelSignatures bool `json:"kernel_signatures"`
	// Userspace: systemd checks signatures itself against /etc/verity.d.
	Userspace bool `json:"userspace_check"`
	// PolicySet: sysext's image policy is in place for this systemd.
	PolicySet bool `json:"image_policy"`
	// SystemdVersion repeats Facts.SystemdVersion.
	SystemdVersion int `json:"systemd_version"`
}

// GatherVerity reads the kernel's device-mapper and dm-verity support and
// sysext's image policy under sys.Root, for systemd v; modulesDir is the
// running kernel's /lib/modules/$(uname -r) ("" to look it up).
func GatherVerity(sys System, modulesDir string, v int) VerityFacts {
	if modulesDir == "" {
		if rel, err := kernelRelease(); err == nil {
			modulesDir = filepath.Join("/lib/modules", rel)
		}
	}
	f := VerityFacts{SystemdVersion: v}
	misc := sys.ProcMisc
	if misc == "" {
		misc = "/proc/misc"
	}
	if b, err := readFileLimited(misc, 1<<16); err == nil {
		f.DeviceMapper = bytes.Contains(b, []byte(" device-mapper\n"))
	}
	sysModule := sys.SysModule
	if sysModule == "" {
		sysModule = "/sys/module"
	}
	if _, err := os.Stat(filepath.Join(sysModule, "dm_verity")); err == nil {
		f.DMVerity = true
	}
	if _, err := os.Stat(filepath.Join(sysModule, "dm_verity", "parameters", "require_signatures")); err == nil {
		f.KernelSignatures = true
	}
	mods := kernelModules(modulesDir, "dm-mod", "dm-verity")
	f.DeviceMapper = f.DeviceMapper || mods["dm-mod"]
	f.DMVerity = f.DMVerity || mods["dm-verity"]
	if !f.KernelSignatures && modulesDir != "" {
		// Not loaded yet: the kernel's build configuration says.
		cfg := filepath.Join("/boot", "config-"+filepath.Base(modulesDir))
		if b, err := readFileLimited(cfg, 16<<20); err == nil {
			f.KernelSignatures = bytes.Contains(b, []byte("\nCONFIG_DM_VERITY_VERIFY_ROOTHASH_SIG=y\n"))
		}
	}
	f.Userspace = v >= SystemdUserspaceVerity
	f.PolicySet = ImagePolicySet(sys.Root, v)
	return f
}

// kernelModules reports which of names (as in modules.dep, "dm-verity")
// the kernel has built in or can load.
func kernelModules(dir string, names ...string) map[string]bool {
	out := map[string]bool{}
	if dir == "" {
		return out
	}
	for _, list := range []string{"modules.dep", "modules.builtin"} {
		data, err := readFileLimited(filepath.Join(dir, list), 64<<20)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(data), "\n") {
			if i := strings.IndexByte(line, ':'); i >= 0 {
				line = line[:i]
			}
			base := filepath.Base(strings.TrimSpace(line))
			for _, n := range names {
				for _, ext := range []string{".ko", ".ko.xz", ".ko.zst", ".ko.gz"} {
					if base == n+ext || base == strings.ReplaceAll(n, "-", "_")+ext {
						out[n] = true
					}
				}
			}
		}
	}
	return out
}

// Enforces says whether the kernel checks an image's blocks at every read
// (device-mapper with dm-verity).
func (f VerityFacts) Enforces() bool { return f.DeviceMapper && f.DMVerity }

// Verdict is one sentence on what this host does with a signed disk
// image, and whether that is full enforcement. policy says whether
// sysext's image policy is (or, for a pull about to set it, will be) in
// place.
func (f VerityFacts) Verdict(policy bool) (sentence string, full bool) {
	switch {
	case !f.Enforces():
		return "no enforcement: the kernel has no device-mapper with dm-verity, so systemd cannot set up a signed disk image (it fails to merge); only sysext's checks at pull time hold", false
	case !f.KernelSignatures && !f.Userspace:
		return "dm-verity checks every block, but nothing here can check the root hash signature (no kernel keyring support, systemd older than 252)", false
	case f.SystemdVersion > 0 && f.SystemdVersion < SystemdImagePolicyFlag:
		return fmt.Sprintf("dm-verity checks every block and systemd checks the signature, but systemd %d takes no image policy: an unsigned image put in its place would merge", f.SystemdVersion), false
	case !policy:
		return "dm-verity checks every block and systemd checks the signature, but sysext's image policy is not set: an unsigned image put in its place would merge", false
	}
	how := "the kernel keyring or, failing that, systemd against /etc/verity.d"
	if !f.KernelSignatures {
		how = "systemd against /etc/verity.d"
	}
	return "enforced: dm-verity checks every block at every read, the root hash signature is checked by " + how + ", and the image policy (" + ImagePolicy + ") refuses unsigned images", true
}

// ImageVerity is what the preflight knows of a disk image's verity, from
// the manifest's annotations or the image.
type ImageVerity struct {
	RootHash string
	Signed   bool
}

// verityFindings judges a disk image with verity against the host.
func verityFindings(f Facts, img Image, name string, add func(check string, sev Severity, ext, cause, fix string)) {
	if img.Format != fsimage.GPT || img.Verity == nil || img.Verity.RootHash == "" {
		return
	}
	vf := f.Verity
	if !vf.Enforces() {
		add(CheckVerity, Refuse, name, "the kernel has no device-mapper with dm-verity: systemd-sysext cannot set up this disk image's verity and fails to merge it",
			"boot a kernel with CONFIG_BLK_DEV_DM and CONFIG_DM_VERITY ('modprobe dm-verity'), or use a squashfs or EROFS image")
		return
	}
	if !img.Verity.Signed {
		return
	}
	// A pull sets the image policy where systemd takes one.
	willSet := vf.PolicySet || vf.SystemdVersion == 0 || vf.SystemdVersion >= SystemdImagePolicyFlag
	if sentence, full := vf.Verdict(willSet); !full {
		add(CheckVerity, Warn, name, "signed disk image, "+sentence,
			"upgrade systemd (254+ takes the image policy sysext sets) or accept pull-time checks; --strict refuses")
	}
}

// CheckVerity is the check name of verity findings.
const CheckVerity = "verity"
