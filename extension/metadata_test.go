package extension

import (
	"reflect"
	"strings"
	"testing"
)

func TestMetadataReleaseRoundTrip(t *testing.T) {
	ms := []Metadata{
		{Name: "docker", Version: "24.0.9", Arch: "x86-64", ID: AnyID},
		{Name: "kubernetes", Version: "v1.30.1", Arch: "arm64", ID: "flatcar", SysextLevel: "1.0", ReloadManager: true},
		{Name: "tool", Version: "2", Arch: AnyArch, ID: "fedora", VersionID: "39", Scopes: []Scope{ScopeInitrd, ScopeSystem}},
	}
	for _, m := range ms {
		if err := m.Validate(); err != nil {
			t.Fatalf("Validate(%+v): %v", m, err)
		}
		rel, err := ParseRelease(m.Release().Format())
		if err != nil {
			t.Fatal(err)
		}
		back, err := MetadataFromRelease(m.Name, rel)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(back, m) {
			t.Errorf("round trip:\n got %+v\nwant %+v", back, m)
		}
	}
}

func TestMetadataRelease(t *testing.T) {
	m := Metadata{Name: "docker", Version: "24.0.9", Arch: "x86-64", ID: "flatcar", SysextLevel: "1.0", ReloadManager: true}
	want := "ID=flatcar\nSYSEXT_LEVEL=1.0\nARCHITECTURE=x86-64\nEXTENSION_RELOAD_MANAGER=1\nSYSEXT_ID=docker\nSYSEXT_VERSION_ID=24.0.9\n"
	if got := m.Release().String(); got != want {
		t.Fatalf("Release() =\n%s\nwant\n%s", got, want)
	}
}

func TestMetadataValidate(t *testing.T) {
	ok := Metadata{Name: "n", Version: "1", Arch: "x86-64", ID: AnyID}
	tests := map[string]struct {
		mod  func(*Metadata)
		want string
	}{
		"bad name":       {func(m *Metadata) { m.Name = "a/b" }, "extension name"},
		"bad version":    {func(m *Metadata) { m.Version = "1 0" }, "extension version"},
		"uname arch":     {func(m *Metadata) { m.Arch = "x86_64" }, "systemd's naming"},
		"unknown arch":   {func(m *Metadata) { m.Arch = "sparc" }, "unknown architecture"},
		"no ID":          {func(m *Metadata) { m.ID = "" }, "no ID"},
		"upper-case ID":  {func(m *Metadata) { m.ID = "Fedora" }, "ID="},
		"bad VERSION_ID": {func(m *Metadata) { m.VersionID = "39 beta" }, "VERSION_ID="},
		"bad level":      {func(m *Metadata) { m.SysextLevel = "1/0" }, "SYSEXT_LEVEL="},
	}
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	for name, tt := range tests {
		m := ok
		tt.mod(&m)
		if err := m.Validate(); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: Validate = %v, want an error containing %q", name, err, tt.want)
		}
	}
}

func TestMetadataFromRelease(t *testing.T) {
	rel := mustRelease(t, "ID=_any\nARCHITECTURE=aarch64\nIMAGE_VERSION=3\nEXTENSION_RELOAD_MANAGER=yes\n")
	m, err := MetadataFromRelease("x", rel)
	if err != nil {
		t.Fatal(err)
	}
	if m.Arch != "arm64" || m.Version != "3" || !m.ReloadManager || m.Scopes != nil {
		t.Fatalf("MetadataFromRelease = %+v", m)
	}
	if _, err := MetadataFromRelease("../x", rel); err == nil {
		t.Fatal("bad name accepted")
	}
	if _, err := MetadataFromRelease("x", mustRelease(t, "ARCHITECTURE=sparc\n")); err == nil || !strings.Contains(err.Error(), "extension-release.x") {
		t.Fatalf("unknown arch: %v", err)
	}
	if _, err := MetadataFromRelease("x", mustRelease(t, "SYSEXT_SCOPE=bogus\n")); err == nil {
		t.Fatal("bad scope accepted")
	}
}
