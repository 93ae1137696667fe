package extension

import (
	"fmt"
	"strings"
)

// Metadata is the typed view of one extension's identity and compatibility
// fields, as sysext builds them and as registries carry them in annotations.
type Metadata struct {
	Name          string  // the NAME in extension-release.NAME
	Version       string  // SYSEXT_VERSION_ID
	Arch          Arch    // ARCHITECTURE; "" when unset
	ID            string  // ID: an OS ID or _any
	VersionID     string  // VERSION_ID
	SysextLevel   string  // SYSEXT_LEVEL
	Scopes        []Scope // SYSEXT_SCOPE; nil when unset
	ReloadManager bool    // EXTENSION_RELOAD_MANAGER=1
}

// Validate checks the fields a release file will be built from.
func (m Metadata) Validate() error {
	if err := ValidateName(m.Name); err != nil {
		return err
	}
	if m.Version != "" {
		if err := ValidateVersion(m.Version); err != nil {
			return err
		}
	}
	if m.Arch != "" && !m.Arch.Valid() {
		if _, err := ParseArch(string(m.Arch)); err != nil {
			return err
		}
		return fmt.Errorf("architecture %q is not in systemd's naming", m.Arch)
	}
	if m.ID == "" {
		return fmt.Errorf("extension %s has no ID: use an OS ID or _any", m.Name)
	}
	for _, f := range []struct{ name, v string }{{"ID", m.ID}, {"VERSION_ID", m.VersionID}, {"SYSEXT_LEVEL", m.SysextLevel}} {
		if f.name == "ID" && f.v == AnyID {
			continue
		}
		if !lowerToken(f.v) {
			return fmt.Errorf("%s=%q: use lower-case letters, digits, '.', '_' and '-' only", f.name, f.v)
		}
	}
	return nil
}

// lowerToken is os-release(5)'s character set for ID=, VERSION_ID= and
// SYSEXT_LEVEL=.
func lowerToken(s string) bool {
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// Release renders the metadata as an extension-release file.
func (m Metadata) Release() *Release {
	r := &Release{}
	r.Set(FieldID, m.ID)
	if m.VersionID != "" {
		r.Set(FieldVersionID, m.VersionID)
	}
	if m.SysextLevel != "" {
		r.Set(FieldSysextLevel, m.SysextLevel)
	}
	if m.Arch != "" {
		r.Set(FieldArchitecture, string(m.Arch))
	}
	if len(m.Scopes) > 0 {
		s := make([]string, len(m.Scopes))
		for i, sc := range m.Scopes {
			s[i] = string(sc)
		}
		r.Set(FieldSysextScope, strings.Join(s, " "))
	}
	if m.ReloadManager {
		r.Set(FieldExtensionReloadManager, "1")
	}
	r.Set(FieldSysextID, m.Name)
	if m.Version != "" {
		r.Set(FieldSysextVersionID, m.Version)
	}
	return r
}

// MetadataFromRelease reads the typed fields of NAME's extension-release
// file. It validates the name and the fields it types.
func MetadataFromRelease(name string, r *Release) (Metadata, error) {
	if err := ValidateName(name); err != nil {
		return Metadata{}, err
	}
	m := Metadata{
		Name:        name,
		Version:     r.Get(FieldSysextVersionID),
		ID:          r.Get(FieldID),
		VersionID:   r.Get(FieldVersionID),
		SysextLevel: r.Get(FieldSysextLevel),
	}
	if v := r.Get(FieldImageVersion); m.Version == "" && v != "" {
		m.Version = v // some builders record the version only there
	}
	if a := r.Get(FieldArchitecture); a != "" {
		arch, err := ParseArch(a)
		if err != nil {
			return Metadata{}, fmt.Errorf("extension-release.%s: %w", name, err)
		}
		m.Arch = arch
	}
	if v, ok := r.Lookup(FieldSysextScope); ok {
		s, err := ParseScopes(v)
		if err != nil {
			return Metadata{}, fmt.Errorf("extension-release.%s: %w", name, err)
		}
		m.Scopes = s
	}
	m.ReloadManager = parseBool(r.Get(FieldExtensionReloadManager))
	return m, nil
}

// parseBool follows systemd's parse_boolean.
func parseBool(s string) bool {
	switch strings.ToLower(s) {
	case "1", "yes", "y", "true", "t", "on":
		return true
	}
	return false
}
