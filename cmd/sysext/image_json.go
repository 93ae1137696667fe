package main

import (
	"fmt"
	"io"
	"strings"

	"github.com/sysext/sysext/extension"
)

// imageJSON is the machine-readable description of one image, shared by
// `build --json` and `inspect --json`.
type imageJSON struct {
	Path          string            `json:"path"`
	Name          string            `json:"name"`
	Version       string            `json:"version"`
	Format        string            `json:"format"`
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
}

// compatJSON says whether systemd-sysext would merge the image on a host.
type compatJSON struct {
	OSRelease string `json:"os_release"`
	OK        bool   `json:"ok"`
	Field     string `json:"field,omitempty"`
	Reason    string `json:"reason,omitempty"`
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
		{"architecture", dash(j.Architecture)},
		{"ID", j.ID},
		{"SYSEXT_LEVEL", dash(j.SysextLevel)},
		{"VERSION_ID", dash(j.VersionID)},
		{"scope", strings.Join(j.Scope, " ")},
		{"upholds", dash(strings.Join(j.Upholds, " "))},
		{"reload manager", yes[j.ReloadManager]},
		{"size", fmt.Sprintf("%d bytes (%s)", j.Size, humanSize(j.Size))},
	}
	if j.Digest != "" {
		lines = append(lines, [2]string{"digest", j.Digest})
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
		if _, err := fmt.Fprintf(w, "%-15s %s\n", l[0]+":", l[1]); err != nil {
			return err
		}
	}
	return nil
}

func humanSize(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
