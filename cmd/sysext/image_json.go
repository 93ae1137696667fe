package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"strings"

	"github.com/sysext/sysext/extension"
	"github.com/sysext/sysext/fsimage"
	"github.com/sysext/sysext/internal/extract"
)

// imageJSON is the machine-readable description of one image, shared by
// `build --json` and `inspect --json`.
type imageJSON struct {
	Path    string `json:"path"`
	Name    string `json:"name"`
	Version string `json:"version"`
	Format  string `json:"format"`
	// Compression: an EROFS image's compressors ("none" when
	// uncompressed), which the nodes' kernels must have.
	Compression   []string          `json:"compression,omitempty"`
	Architecture  string            `json:"architecture,omitempty"`
	ID            string            `json:"id"`
	VersionID     string            `json:"version_id,omitempty"`
	SysextLevel   string            `json:"sysext_level,omitempty"`
	Scope         []string          `json:"scope"`
	ReloadManager bool              `json:"reload_manager"`
	Upholds       []string          `json:"upholds"`
	Size          int64             `json:"size"`
	Digest        string            `json:"digest,omitempty"`
	Release       map[string]string `json:"release"`
	Warnings      []string          `json:"warnings,omitempty"`
	Compatible    *compatJSON       `json:"compatible,omitempty"`
	DDI           *ddiJSON          `json:"ddi,omitempty"` // a disk image's partitions, verity and signature
	// DigestCached: the digest was read from the file's cache attribute.
	DigestCached bool `json:"digest_cached,omitempty"`
	// Special lists what gives the image power beyond its files' content
	// (inspect FILE only).
	Special *specialJSON `json:"special_files,omitempty"`
}

// specialJSON lists an image's setuid/setgid files, file capabilities and
// device nodes.
type specialJSON struct {
	Files []specialFileJSON `json:"files"`
	// CapabilitiesRead is false when the image's reader shows no xattrs.
	CapabilitiesRead bool `json:"capabilities_read"`
}

type specialFileJSON struct {
	Path         string `json:"path"`
	Mode         string `json:"mode"` // octal, setuid/setgid/sticky included: "4755"
	UID          uint32 `json:"uid"`
	GID          uint32 `json:"gid"`
	Setuid       bool   `json:"setuid,omitempty"`
	Setgid       bool   `json:"setgid,omitempty"`
	Capabilities string `json:"capabilities,omitempty"`
	Device       string `json:"device,omitempty"` // "char 1:3", "block 8:0"
}

func newSpecialJSON(files []fsimage.SpecialFile, capsUnread bool) *specialJSON {
	j := &specialJSON{Files: []specialFileJSON{}, CapabilitiesRead: !capsUnread}
	for _, f := range files {
		j.Files = append(j.Files, specialFileJSON{
			Path: "/" + f.Path, Mode: fmt.Sprintf("%04o", unixMode(f.Mode)), UID: f.UID, GID: f.GID,
			Setuid: f.Setuid(), Setgid: f.Setgid(), Capabilities: f.Capabilities, Device: f.DeviceString(),
		})
	}
	return j
}

// unixMode is the permission bits of m as chmod writes them.
func unixMode(m fs.FileMode) uint32 {
	u := uint32(m.Perm())
	if m&fs.ModeSetuid != 0 {
		u |= 0o4000
	}
	if m&fs.ModeSetgid != 0 {
		u |= 0o2000
	}
	if m&fs.ModeSticky != 0 {
		u |= 0o1000
	}
	return u
}

// printSpecial writes one line per special file under its kind.
func printSpecial(w io.Writer, j *specialJSON) error {
	var lines [][2]string
	for _, f := range j.Files {
		p := extension.Escape(f.Path)
		if f.Setuid {
			lines = append(lines, [2]string{"setuid", fmt.Sprintf("%s (mode %s, uid %d)", p, f.Mode, f.UID)})
		}
		if f.Setgid {
			lines = append(lines, [2]string{"setgid", fmt.Sprintf("%s (mode %s, gid %d)", p, f.Mode, f.GID)})
		}
		if f.Capabilities != "" {
			lines = append(lines, [2]string{"capabilities", p + " " + f.Capabilities})
		}
		if f.Device != "" {
			lines = append(lines, [2]string{"device node", fmt.Sprintf("%s (%s, mode %s)", p, f.Device, f.Mode)})
		}
	}
	if len(lines) == 0 {
		lines = append(lines, [2]string{"special files", "none (no setuid/setgid file, file capability or device node)"})
	}
	if !j.CapabilitiesRead {
		lines = append(lines, [2]string{"capabilities", "not read: this image's reader (unsquashfs) shows no xattrs"})
	}
	for _, l := range lines {
		if _, err := fmt.Fprintf(w, "%-15s %s\n", l[0]+":", l[1]); err != nil {
			return err
		}
	}
	return nil
}

// compatJSON says whether systemd-sysext would merge the image on a host.
type compatJSON struct {
	OSRelease string `json:"os_release"`
	OK        bool   `json:"ok"`
	Field     string `json:"field,omitempty"`
	Reason    string `json:"reason,omitempty"`
}

// compatibility judges rel on the host described by hostRel (read from
// hostFile): extension.Compatible's verdict, or its error when it is not a
// verdict.
func compatibility(hostFile string, hostRel, rel *extension.Release) (*compatJSON, error) {
	cj := &compatJSON{OSRelease: hostFile, OK: true}
	if err := extension.Compatible(rel, extension.Host{OSRelease: hostRel}); err != nil {
		var ie *extension.IncompatibleError
		if !errors.As(err, &ie) {
			return nil, err
		}
		cj.OK, cj.Field, cj.Reason = false, ie.Field, ie.Reason
	}
	return cj, nil
}

func newImageJSON(path, format string, size int64, digest string, m extension.Metadata, rel *extension.Release, upholds []string) imageJSON {
	scopes := make([]string, 0, len(m.Scopes))
	for _, s := range m.Scopes {
		scopes = append(scopes, string(s))
	}
	if len(scopes) == 0 {
		for _, s := range extension.DefaultScopes {
			scopes = append(scopes, string(s))
		}
	}
	if upholds == nil {
		upholds = []string{}
	}
	return imageJSON{
		Path: path, Name: m.Name, Version: m.Version, Format: format,
		Architecture: string(m.Arch), ID: m.ID, VersionID: m.VersionID, SysextLevel: m.SysextLevel,
		Scope: scopes, ReloadManager: m.ReloadManager, Upholds: upholds,
		Size: size, Digest: digest, Release: rel.Map(),
	}
}

// printImage writes the human-readable form.
func printImage(w io.Writer, j imageJSON) error {
	dash := func(s string) string {
		if s == "" {
			return "-"
		}
		return s
	}
	yes := map[bool]string{true: "yes", false: "no"}
	lines := [][2]string{
		{"file", j.Path},
		{"name", j.Name},
		{"version", dash(j.Version)},
		{"format", j.Format},
	}
	if len(j.Compression) > 0 {
		lines = append(lines, [2]string{"compression", compressionLine(j.Compression)})
	}
	lines = append(lines, [][2]string{
		{"architecture", dash(j.Architecture)},
		{"ID", j.ID},
		{"SYSEXT_LEVEL", dash(j.SysextLevel)},
		{"VERSION_ID", dash(j.VersionID)},
		{"scope", strings.Join(j.Scope, " ")},
		{"upholds", dash(strings.Join(j.Upholds, " "))},
		{"reload manager", yes[j.ReloadManager]},
		{"size", fmt.Sprintf("%d bytes (%s)", j.Size, humanSize(j.Size))},
	}...)
	if j.Digest != "" {
		d := j.Digest
		if j.DigestCached {
			d += " (cached in the file's user.sysext.sha256 attribute)"
		}
		lines = append(lines, [2]string{"digest", d})
	}
	if c := j.Compatible; c != nil {
		v := "yes, on the host described by " + c.OSRelease
		if !c.OK {
			v = "no, on the host described by " + c.OSRelease + ": " + c.Reason
		}
		lines = append(lines, [2]string{"merges", v})
	}
	lines = append(lines, j.DDI.lines()...)
	for _, l := range lines {
		if _, err := printf(w, "%-15s %s\n", l[0]+":", l[1]); err != nil {
			return err
		}
	}
	if j.Special != nil {
		return printSpecial(w, j.Special)
	}
	return nil
}

func humanSize(n int64) string { return extract.SizeString(n) }

// erofsCompression is what the JSON and the line say of an EROFS image's
// compressors.
func erofsCompression(algs []string) []string {
	if len(algs) == 0 {
		return []string{"none"}
	}
	return algs
}

// compressionLine names each compressor with what a node's kernel needs to
// mount it: the publisher's choice is the nodes' minimum.
func compressionLine(algs []string) string {
	parts := make([]string, len(algs))
	for i, a := range algs {
		parts[i] = a
		if a != "none" {
			parts[i] += " (nodes need " + fsimage.ErofsNeeds(a) + ")"
		}
	}
	return strings.Join(parts, ", ")
}
