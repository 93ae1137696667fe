package oci_test

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/sysext/sysext/extension"
	"github.com/sysext/sysext/oci"
)

func TestParseReference(t *testing.T) {
	const d = "sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae"
	for in, want := range map[string]oci.Reference{
		"ghcr.io/acme/ext/docker:24.0.9": {Registry: "ghcr.io", Repository: "acme/ext/docker", Tag: "24.0.9"},
		"127.0.0.1:5000/ext/hello":       {Registry: "127.0.0.1:5000", Repository: "ext/hello", Tag: "latest"},
		"localhost/ext/hello@" + d:       {Registry: "localhost", Repository: "ext/hello", Digest: d},
		"reg.example:443/x:1@" + d:       {Registry: "reg.example:443", Repository: "x", Tag: "1", Digest: d},
		"oci:/srv/layout:1.0":            {Layout: "/srv/layout", Tag: "1.0"},
		"oci:layout":                     {Layout: "layout", Tag: "latest"},
		"oci:/a:b/layout@" + d:           {Layout: "/a:b/layout", Digest: d},
		"oci:/a:b/layout:v2":             {Layout: "/a:b/layout", Tag: "v2"},
	} {
		got, err := oci.ParseReference(in)
		if err != nil {
			t.Errorf("%s: %v", in, err)
			continue
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s: got %+v, want %+v", in, got, want)
		}
		again, err := oci.ParseReference(got.String())
		if err != nil || !reflect.DeepEqual(again, got) {
			t.Errorf("%s: String() %q does not parse back: %+v %v", in, got.String(), again, err)
		}
	}
	for in, want := range map[string]string{
		"ubuntu":                   "name the registry",
		"acme/ext:1":               "not a registry host",
		"ghcr.io/Acme/ext:1":       "lowercase",
		"ghcr.io/acme/ext@sha256:": "digest",
		"oci:":                     "no directory",
		"oci:/x:":                  "empty tag",
	} {
		_, err := oci.ParseReference(in)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: got %v, want an error containing %q", in, err, want)
		}
	}
	if r, _ := oci.ParseReference("127.0.0.1:5000/x"); !r.IsLoopback() {
		t.Error("127.0.0.1 is loopback")
	}
	if r, _ := oci.ParseReference("[::1]:5000/x"); !r.IsLoopback() {
		t.Error("::1 is loopback")
	}
	if r, _ := oci.ParseReference("ghcr.io/x"); r.IsLoopback() {
		t.Error("ghcr.io is not loopback")
	}
}

func TestAnnotationsRoundTrip(t *testing.T) {
	m := extension.Metadata{Name: "docker", Version: "24.0.9", Arch: "arm64", ID: "flatcar", SysextLevel: "1.0",
		Scopes: []extension.Scope{extension.ScopeSystem, extension.ScopeInitrd}, ReloadManager: true}
	got, ok, err := oci.MetadataFromAnnotations(oci.Annotations(m))
	if err != nil || !ok || !reflect.DeepEqual(got, m) {
		t.Fatalf("round trip: %+v %v %v", got, ok, err)
	}
	if _, ok, _ := oci.MetadataFromAnnotations(map[string]string{"x": "y"}); ok {
		t.Fatal("foreign annotations decoded as ours")
	}
	bad := oci.Annotations(m)
	bad[oci.AnnotationName] = "../etc"
	if _, _, err := oci.MetadataFromAnnotations(bad); err == nil {
		t.Fatal("a name with / accepted")
	}
	bad = oci.Annotations(m)
	bad[oci.AnnotationArchitecture] = "pdp11"
	if _, _, err := oci.MetadataFromAnnotations(bad); err == nil {
		t.Fatal("an unknown architecture accepted")
	}
}

// TestParseReferenceMessages: each malformed reference a new user types is
// refused at parse time (ErrInvalidReference) with what to write instead,
// and every suggestion printed is itself a valid reference.
func TestParseReferenceMessages(t *testing.T) {
	for in, want := range map[string]string{
		"http://localhost:5000/x:1":  `drop the scheme "http://": write localhost:5000/x:1`,
		"https://ghcr.io/acme/x:1":   `drop the scheme "https://": write ghcr.io/acme/x:1`,
		"UPPER/Repo:tag":             "e.g. docker.io/upper/repo:tag (repository names are lowercase)",
		"ghcr.io/Acme/Ext:1":         "repository names are lowercase: write ghcr.io/acme/ext:1",
		"localhost:99999/x:1":        `port "99999" of localhost is not a number from 1 to 65535`,
		"localhost:0/x:1":            `port "0"`,
		"localhost:http/x:1":         `port "http"`,
		"127.0.0.1:/x":               `port ""`,
		"[::1]:70000/x":              `port "70000"`,
		"bad//ref":                   "not a registry host",
		"oci:/x:":                    "empty tag",
		"ghcr.io/acme/x@sha256:beef": "digest",
	} {
		_, err := oci.ParseReference(in)
		if err == nil || !errors.Is(err, oci.ErrInvalidReference) || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: got %v, want an ErrInvalidReference containing %q", in, err, want)
			continue
		}
		if strings.Count(err.Error(), "\n") > 0 {
			t.Errorf("%s: more than one line: %q", in, err)
		}
		// Whatever the message suggests must parse.
		for _, w := range strings.Fields(err.Error()) {
			if strings.HasPrefix(w, "docker.io/") || strings.HasPrefix(w, "localhost:5000/") || strings.HasPrefix(w, "ghcr.io/") {
				w = strings.TrimRight(w, ",;)")
				if _, err := oci.ParseReference(w); err != nil {
					t.Errorf("%s: the suggestion %q does not parse: %v", in, w, err)
				}
			}
		}
	}
	for _, ok := range []string{"localhost:5000/x:1", "[::1]:5000/x", "[::1]/x", "reg.example:65535/a/b:c"} {
		if _, err := oci.ParseReference(ok); err != nil {
			t.Errorf("%s: %v", ok, err)
		}
	}
}
