package extension

import (
	"errors"
	"testing"
)

func mustRelease(t *testing.T, s string) *Release {
	t.Helper()
	r, err := ParseRelease([]byte(s))
	if err != nil {
		t.Fatalf("ParseRelease(%q): %v", s, err)
	}
	return r
}

// The cases follow systemd's extension_release_validate (src/shared/
// extension-util.c, 252 and later) branch by branch.
func TestCompatible(t *testing.T) {
	const (
		fedora     = "ID=fedora\nVERSION_ID=39\n"
		flatcar    = "ID=flatcar\nVERSION_ID=3815.2.0\nSYSEXT_LEVEL=1.0\n"
		arch       = "ID=arch\n" // rolling: neither VERSION_ID nor SYSEXT_LEVEL
		levelOnly  = "ID=foo\nSYSEXT_LEVEL=2\n"
		hostX86    = Arch("x86-64")
		noProblem  = ""
		fID        = FieldID
		fVersionID = FieldVersionID
		fLevel     = FieldSysextLevel
		fArch      = FieldArchitecture
		fScope     = FieldSysextScope
	)
	tests := []struct {
		name  string
		host  string
		ext   string
		arch  Arch
		scope Scope
		field string // "" = compatible
	}{
		{"_any matches any OS", fedora, "ID=_any\n", "", "", noProblem},
		{"_any skips the version check", flatcar, "ID=_any\nVERSION_ID=1\nSYSEXT_LEVEL=9\n", "", "", noProblem},
		{"no ID is refused", fedora, "VERSION_ID=39\n", "", "", fID},
		{"empty ID is refused", fedora, "ID=\nVERSION_ID=39\n", "", "", fID},
		{"other ID is refused", fedora, "ID=debian\nVERSION_ID=39\n", "", "", fID},
		{"same ID and VERSION_ID", fedora, "ID=fedora\nVERSION_ID=39\n", "", "", noProblem},
		{"same ID, other VERSION_ID", fedora, "ID=fedora\nVERSION_ID=40\n", "", "", fVersionID},
		{"same ID, no VERSION_ID", fedora, "ID=fedora\n", "", "", fVersionID},
		{"host without SYSEXT_LEVEL ignores the extension's", fedora, "ID=fedora\nSYSEXT_LEVEL=1.0\nVERSION_ID=39\n", "", "", noProblem},
		{"host without SYSEXT_LEVEL, extension only has one", fedora, "ID=fedora\nSYSEXT_LEVEL=1.0\n", "", "", fVersionID},
		{"SYSEXT_LEVEL equal wins over VERSION_ID", flatcar, "ID=flatcar\nSYSEXT_LEVEL=1.0\nVERSION_ID=1\n", "", "", noProblem},
		{"SYSEXT_LEVEL differs", flatcar, "ID=flatcar\nSYSEXT_LEVEL=2.0\nVERSION_ID=3815.2.0\n", "", "", fLevel},
		{"no SYSEXT_LEVEL falls back to VERSION_ID", flatcar, "ID=flatcar\nVERSION_ID=3815.2.0\n", "", "", noProblem},
		{"no SYSEXT_LEVEL, VERSION_ID differs", flatcar, "ID=flatcar\nVERSION_ID=1\n", "", "", fVersionID},
		{"rolling host takes any version", arch, "ID=arch\nVERSION_ID=whatever\n", "", "", noProblem},
		{"rolling host takes none", arch, "ID=arch\n", "", "", noProblem},
		{"host with only a level: extension level equal", levelOnly, "ID=foo\nSYSEXT_LEVEL=2\n", "", "", noProblem},
		{"host with only a level: extension level differs", levelOnly, "ID=foo\nSYSEXT_LEVEL=3\n", "", "", fLevel},
		{"host with only a level: extension has none", levelOnly, "ID=foo\n", "", "", noProblem},
		{"ARCHITECTURE equal", fedora, "ID=_any\nARCHITECTURE=x86-64\n", hostX86, "", noProblem},
		{"ARCHITECTURE _any", fedora, "ID=_any\nARCHITECTURE=_any\n", "arm64", "", noProblem},
		{"ARCHITECTURE differs", fedora, "ID=_any\nARCHITECTURE=arm64\n", hostX86, "", fArch},
		{"ARCHITECTURE checked before ID", fedora, "ID=debian\nARCHITECTURE=arm64\n", hostX86, "", fArch},
		{"default scope includes system", fedora, "ID=_any\n", "", ScopeSystem, noProblem},
		{"default scope includes portable", fedora, "ID=_any\n", "", ScopePortable, noProblem},
		{"default scope excludes initrd", fedora, "ID=_any\n", "", ScopeInitrd, fScope},
		{"initrd scope in the initrd", fedora, "ID=_any\nSYSEXT_SCOPE=initrd\n", "", ScopeInitrd, noProblem},
		{"initrd scope on the system", fedora, "ID=_any\nSYSEXT_SCOPE=initrd\n", "", ScopeSystem, fScope},
		{"several scopes", fedora, "ID=_any\nSYSEXT_SCOPE=\"initrd system\"\n", "", ScopeSystem, noProblem},
		{"empty scope matches nothing", fedora, "ID=_any\nSYSEXT_SCOPE=\n", "", ScopeSystem, fScope},
		{"unknown scope", fedora, "ID=_any\nSYSEXT_SCOPE=bogus\n", "", ScopeSystem, fScope},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			arch := tt.arch
			if arch == "" {
				arch = hostX86
			}
			err := Compatible(mustRelease(t, tt.ext), Host{OSRelease: mustRelease(t, tt.host), Arch: arch, Scope: tt.scope})
			if tt.field == "" {
				if err != nil {
					t.Fatalf("Compatible = %v, want nil", err)
				}
				return
			}
			var ie *IncompatibleError
			if !errors.As(err, &ie) {
				t.Fatalf("Compatible = %v, want an *IncompatibleError on %s", err, tt.field)
			}
			if ie.Field != tt.field || ie.Reason == "" {
				t.Fatalf("Compatible refused on %s (%q), want %s", ie.Field, ie.Reason, tt.field)
			}
		})
	}
}

func TestCompatibleDefaultsToHostArch(t *testing.T) {
	other := Arch("arm64")
	if HostArch() == other {
		other = "x86-64"
	}
	host := Host{OSRelease: mustRelease(t, "ID=debian\n")}
	if err := Compatible(mustRelease(t, "ID=_any\nARCHITECTURE="+string(HostArch())+"\n"), host); err != nil {
		t.Fatalf("own arch refused: %v", err)
	}
	if err := Compatible(mustRelease(t, "ID=_any\nARCHITECTURE="+string(other)+"\n"), host); err == nil {
		t.Fatal("other arch accepted")
	}
}
