package extension

import (
	"fmt"
	"strings"
)

// Scope is a SYSEXT_SCOPE= value: where an extension may be merged.
type Scope string

// The scopes systemd knows.
const (
	ScopeSystem   Scope = "system"
	ScopeInitrd   Scope = "initrd"
	ScopePortable Scope = "portable"
)

// DefaultScopes is what systemd assumes when SYSEXT_SCOPE= is unset.
var DefaultScopes = []Scope{ScopeSystem, ScopePortable}

// ParseScopes parses a space-separated SYSEXT_SCOPE= value.
func ParseScopes(s string) ([]Scope, error) {
	var out []Scope
	for _, f := range strings.Fields(s) {
		switch Scope(f) {
		case ScopeSystem, ScopeInitrd, ScopePortable:
			out = append(out, Scope(f))
		default:
			return nil, fmt.Errorf("unknown scope %q in SYSEXT_SCOPE: use system, initrd or portable", f)
		}
	}
	return out, nil
}

// Host describes where an extension would be merged: the host's os-release,
// its architecture and the scope of the merge.
type Host struct {
	OSRelease *Release
	Arch      Arch  // "" means HostArch()
	Scope     Scope // "" means ScopeSystem
}

// IncompatibleError says why systemd-sysext would refuse an extension.
type IncompatibleError struct {
	Field  string // the field that decided: ID, VERSION_ID, SYSEXT_LEVEL, ARCHITECTURE, SYSEXT_SCOPE
	Reason string
}

func (e *IncompatibleError) Error() string { return e.Reason }

// Compatible applies systemd-sysext's rules to an extension-release file:
// it returns nil when the extension would merge on host, and an
// *IncompatibleError naming the field and the reason otherwise.
//
// The rules, in systemd's order: SYSEXT_SCOPE (default "system portable")
// must include the merge's scope; ARCHITECTURE, when set, must be _any or the
// host's; ID must be set and be _any or the host's ID, and _any skips the
// version checks; a host without VERSION_ID and SYSEXT_LEVEL (a rolling
// release) takes any version; when both host and extension set
// SYSEXT_LEVEL those must be equal, otherwise the extension's VERSION_ID
// must equal the host's.
func Compatible(ext *Release, host Host) error {
	scope := host.Scope
	if scope == "" {
		scope = ScopeSystem
	}
	arch := host.Arch
	if arch == "" {
		arch = HostArch()
	}
	scopes := DefaultScopes
	if v, ok := ext.Lookup(FieldSysextScope); ok {
		s, err := ParseScopes(v)
		if err != nil {
			return &IncompatibleError{FieldSysextScope, err.Error()}
		}
		scopes = s
	}
	inScope := false
	for _, s := range scopes {
		inScope = inScope || s == scope
	}
	if !inScope {
		return &IncompatibleError{FieldSysextScope, fmt.Sprintf("SYSEXT_SCOPE=%q does not include %q", ext.Get(FieldSysextScope), scope)}
	}
	if a := ext.Get(FieldArchitecture); a != "" && a != AnyID && Arch(a) != arch {
		return &IncompatibleError{FieldArchitecture, fmt.Sprintf("ARCHITECTURE=%s does not match the host's %s", a, arch)}
	}
	id := ext.Get(FieldID)
	if id == "" {
		return &IncompatibleError{FieldID, "the extension-release file has no ID= field: set ID=_any or the OS's ID"}
	}
	if id == AnyID {
		return nil
	}
	hostID := host.OSRelease.Get(FieldID)
	if id != hostID {
		return &IncompatibleError{FieldID, fmt.Sprintf("ID=%s does not match the host's ID=%s", id, hostID)}
	}
	hostVersion := host.OSRelease.Get(FieldVersionID)
	hostLevel := host.OSRelease.Get(FieldSysextLevel)
	if hostVersion == "" && hostLevel == "" {
		return nil
	}
	if level := ext.Get(FieldSysextLevel); hostLevel != "" && level != "" {
		if level != hostLevel {
			return &IncompatibleError{FieldSysextLevel, fmt.Sprintf("SYSEXT_LEVEL=%s does not match the host's SYSEXT_LEVEL=%s", level, hostLevel)}
		}
		return nil
	}
	if hostVersion != "" {
		v := ext.Get(FieldVersionID)
		if v == "" {
			return &IncompatibleError{FieldVersionID, fmt.Sprintf("the extension has neither a matching SYSEXT_LEVEL nor VERSION_ID, and the host has VERSION_ID=%s", hostVersion)}
		}
		if v != hostVersion {
			return &IncompatibleError{FieldVersionID, fmt.Sprintf("VERSION_ID=%s does not match the host's VERSION_ID=%s", v, hostVersion)}
		}
	}
	return nil
}
