package recipe

import (
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strings"

	"github.com/sysext/sysext/extension"
	"go.yaml.in/yaml/v3"
)

// ButaneOptions describe a provisioning snippet that installs one
// extension with `sysext pull` on first boot and turns on updates.
type ButaneOptions struct {
	Ref          string // the extension's reference (host/repo:tag, oci:PATH)
	Name         string // the extension's name; "" = the repository's last path component
	Variant      string // "flatcar" (default) or "fcos"
	Key          []byte // a cosign public key to require; nil = the node's trust policy decides
	BinaryURL    string // where Ignition downloads the sysext binary; "" = it is already installed
	BinaryHash   string // Ignition verification hash for it ("sha512-HEX" or "sha256-HEX")
	ExtraPullArg []string
}

// validIgnitionHash reports whether s is an Ignition verification hash
// (sha512-HEX or sha256-HEX of the right length).
func validIgnitionHash(s string) bool {
	alg, hexs, ok := strings.Cut(s, "-")
	size := map[string]int{"sha512": sha512.Size, "sha256": sha256.Size}[alg]
	b, err := hex.DecodeString(hexs)
	return ok && size > 0 && err == nil && len(b) == size
}

// IgnitionHash is Ignition's verification hash of a file, sha512-HEX: what
// ButaneOptions.BinaryHash takes for the binary served at BinaryURL.
func IgnitionHash(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha512.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("%s: %w", path, err)
	}
	return "sha512-" + hex.EncodeToString(h.Sum(nil)), nil
}

// butane* mirror the parts of the Butane config spec we write.
type butaneConfig struct {
	Variant string         `yaml:"variant"`
	Version string         `yaml:"version"`
	Storage *butaneStorage `yaml:"storage,omitempty"`
	Systemd butaneSystemd  `yaml:"systemd"`
}

type butaneStorage struct {
	Files []butaneFile `yaml:"files,omitempty"`
}

type butaneFile struct {
	Path     string         `yaml:"path"`
	Mode     int            `yaml:"mode,omitempty"`
	Contents butaneContents `yaml:"contents"`
}

type butaneContents struct {
	Source       string              `yaml:"source,omitempty"`
	Inline       string              `yaml:"inline,omitempty"`
	Verification *butaneVerification `yaml:"verification,omitempty"`
}

type butaneVerification struct {
	Hash string `yaml:"hash"`
}

type butaneSystemd struct {
	Units []butaneUnit `yaml:"units"`
}

type butaneUnit struct {
	Name     string `yaml:"name"`
	Enabled  *bool  `yaml:"enabled,omitempty"`
	Contents string `yaml:"contents,omitempty"`
}

// NameFromRef guesses an extension's name from a reference: the last path
// component of the repository, without tag or digest.
func NameFromRef(ref string) string {
	r := strings.TrimPrefix(ref, "oci:")
	if i := strings.Index(r, "@"); i >= 0 {
		r = r[:i]
	}
	base := path.Base(r)
	if i := strings.LastIndex(base, ":"); i >= 0 {
		base = base[:i]
	}
	return base
}

// ButaneNotes says what a snippet made with o leaves to the node, so the
// command prints it and the snippet's header carries it: without
// BinaryURL nothing installs sysext itself (neither Flatcar nor Fedora
// CoreOS ships it), and a download without a hash is not checked.
func ButaneNotes(o ButaneOptions) []string {
	switch {
	case o.BinaryURL == "":
		return []string{"this snippet does not install sysext: the node's OS image must have it on PATH with its units ('sysext install-units'), which Flatcar and Fedora CoreOS do not ship; give --binary-url URL (and --binary FILE or --binary-hash) to let Ignition download it"}
	case o.BinaryHash == "":
		return []string{"Ignition downloads the sysext binary from " + o.BinaryURL + " without checking it: give --binary FILE (the file served there) or --binary-hash sha512-HEX"}
	}
	return nil
}

// installUnit pulls the extension once, at first boot: %[1]s is its
// name, %[2]s the sysext command, %[3]s pull's arguments.
const installUnit = `[Unit]
Description=Install the %[1]s system extension
Documentation=https://github.com/sysext/sysext
Wants=network-online.target
After=network-online.target
# Once installed, updates come from sysext-update.timer.
ConditionPathExists=!/var/lib/extensions/%[1]s.raw

[Service]
Type=oneshot
RemainAfterExit=yes
Restart=on-failure
RestartSec=10
ExecStart=%[2]s %[3]s

[Install]
WantedBy=multi-user.target
`

// updateService and updateTimer are sysext's own update units, written by
// the snippet when no OS package ships them (%s: the sysext command).
const updateService = `[Unit]
Description=Update system extensions from their registries
Wants=network-online.target
After=network-online.target

[Service]
Type=oneshot
ExecStart=%s update --all
`

const updateTimer = `[Unit]
Description=Check for system extension updates

[Timer]
OnBootSec=15min
OnUnitActiveSec=6h
RandomizedDelaySec=30min
FixedRandomDelay=true
Persistent=true

[Install]
WantedBy=timers.target
`

// Butane renders the snippet. It is valid Butane (Flatcar spec 1.0.0,
// Fedora CoreOS spec 1.5.0) that `butane` turns into Ignition.
func Butane(o ButaneOptions) (string, error) {
	// The reference and the extra arguments become words of an ExecStart=
	// line: systemd's line rules (extension.ValidateLineWord).
	if err := extension.ValidateLineWord("butane: reference", o.Ref); err != nil {
		return "", err
	}
	for _, a := range o.ExtraPullArg {
		if err := extension.ValidateLineWord("butane: pull argument", a); err != nil {
			return "", err
		}
	}
	if o.BinaryHash != "" && o.BinaryURL == "" {
		return "", errors.New("butane: --binary and --binary-hash describe the file at --binary-url: give --binary-url URL")
	}
	if o.BinaryHash != "" && !validIgnitionHash(o.BinaryHash) {
		return "", fmt.Errorf("butane: --binary-hash %q: use sha512-HEX or sha256-HEX", o.BinaryHash)
	}
	name := o.Name
	if name == "" {
		name = NameFromRef(o.Ref)
	}
	if err := extension.ValidateName(name); err != nil {
		return "", fmt.Errorf("butane: %w: give --name", err)
	}
	cfg := butaneConfig{}
	bin := ""
	switch o.Variant {
	case "", "flatcar":
		cfg.Variant, cfg.Version, bin = "flatcar", "1.0.0", "/opt/bin/sysext"
	case "fcos":
		cfg.Variant, cfg.Version, bin = "fcos", "1.5.0", "/usr/local/bin/sysext"
	default:
		return "", fmt.Errorf("butane: --variant %q: use flatcar or fcos", o.Variant)
	}
	if o.BinaryURL == "" {
		bin = "sysext" // installed by the OS image; found on PATH
	}
	var files []butaneFile
	if o.BinaryURL != "" {
		f := butaneFile{Path: bin, Mode: 0o755, Contents: butaneContents{Source: o.BinaryURL}}
		if o.BinaryHash != "" {
			f.Contents.Verification = &butaneVerification{Hash: o.BinaryHash}
		}
		files = append(files, f)
	}
	args := []string{"pull", o.Ref, "--name", name}
	if len(o.Key) > 0 {
		keyPath := "/etc/sysext/keys/" + name + ".pub"
		files = append(files, butaneFile{Path: keyPath, Mode: 0o644, Contents: butaneContents{Inline: string(o.Key)}})
		args = append(args, "--key", keyPath)
	}
	args = append(args, o.ExtraPullArg...)
	if len(files) > 0 {
		cfg.Storage = &butaneStorage{Files: files}
	}
	exec := bin
	if !strings.HasPrefix(bin, "/") {
		exec = "/usr/bin/env " + bin
	}
	install := fmt.Sprintf(installUnit, name, exec, strings.Join(args, " "))
	on := true
	cfg.Systemd.Units = append(cfg.Systemd.Units, butaneUnit{Name: "sysext-install-" + name + ".service", Enabled: &on, Contents: install})
	if o.BinaryURL != "" {
		// Without an OS package nothing ships sysext's own units: write
		// the update service and timer here.
		cfg.Systemd.Units = append(cfg.Systemd.Units,
			butaneUnit{Name: "sysext-update.service", Contents: fmt.Sprintf(updateService, exec)},
			butaneUnit{Name: "sysext-update.timer", Enabled: &on, Contents: updateTimer})
	} else {
		cfg.Systemd.Units = append(cfg.Systemd.Units, butaneUnit{Name: "sysext-update.timer", Enabled: &on})
	}
	var out strings.Builder
	enc := yaml.NewEncoder(&out)
	enc.SetIndent(2)
	if err := enc.Encode(&cfg); err != nil {
		return "", err
	}
	if err := enc.Close(); err != nil {
		return "", err
	}
	head := fmt.Sprintf("# Butane for %s: installs the %s extension from %s on first boot\n# with 'sysext pull' and enables sysext-update.timer.\n# Turn it into Ignition with: butane --strict < this.bu > config.ign\n", cfg.Variant, name, o.Ref)
	for _, n := range ButaneNotes(o) {
		head += commentWrap("NOTE: "+n, 76)
	}
	return head + out.String(), nil
}

// commentWrap writes s as "# " lines of at most width characters.
func commentWrap(s string, width int) string {
	var out, line strings.Builder
	for _, w := range strings.Fields(s) {
		if line.Len() > 0 && line.Len()+1+len(w) > width {
			out.WriteString("# " + line.String() + "\n")
			line.Reset()
		}
		if line.Len() > 0 {
			line.WriteByte(' ')
		}
		line.WriteString(w)
	}
	if line.Len() > 0 {
		out.WriteString("# " + line.String() + "\n")
	}
	return out.String()
}
