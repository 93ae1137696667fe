package activate

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/opencontainers/go-digest"

	"github.com/sysext/sysext/extension"
	"github.com/sysext/sysext/fsimage"
	"github.com/sysext/sysext/internal/inroot"
)

// Expect is what a proof expects to find merged for one extension.
type Expect struct {
	Name    string
	Version string // for sentences only
	// Release is the digest of the extension-release.NAME file inside the
	// image (ReleaseDigest of fsimage.Info.ReleaseBytes, recorded in the
	// store at install): the merged file must be byte-identical. Empty with
	// Fields nil and Absent unset means "merged, any version".
	Release digest.Digest
	// Fields, when Release is empty, is the image's parsed extension-release:
	// the merged file must assign the same values (the fallback for state
	// recorded before the digest was).
	Fields *extension.Release
	// Absent expects no version of the extension merged (the rollback
	// target when there was no previous version).
	Absent bool
}

// ExpectImage reads what a proof expects from the stored image itself: its
// extension-release file, read with fsimage (no mount, no root).
func ExpectImage(ctx context.Context, name, version, path string) (Expect, error) {
	info, err := fsimage.OpenMetadata(ctx, path)
	if err != nil {
		return Expect{}, fmt.Errorf("%s: read the expected extension-release: %w", name, err)
	}
	if info.Name != name {
		return Expect{}, fmt.Errorf("%s: %s carries extension-release.%s, not extension-release.%s", name, path, info.Name, name)
	}
	if version == "" {
		version = info.Meta.Version
	}
	return Expect{Name: name, Version: version, Fields: info.Release}, nil
}

func (e Expect) String() string {
	switch {
	case e.Absent:
		return "no " + e.Name
	case e.Version != "":
		return e.Name + " " + e.Version
	}
	return e.Name
}

// ReleaseDigest is the digest proofs compare: sha256 over the exact bytes of
// the extension-release file.
func ReleaseDigest(release []byte) digest.Digest { return digest.FromBytes(release) }

// ProofError says why the merged tree is not what was expected.
type ProofError struct {
	Expect Expect
	Reason string
}

func (e *ProofError) Error() string {
	if e.Expect.Absent {
		return fmt.Sprintf("%s is still merged: %s", e.Expect.Name, e.Reason)
	}
	return fmt.Sprintf("%s is not merged: %s", e.Expect, e.Reason)
}

// Prover checks what systemd-sysext merged on a running system.
type Prover struct {
	// Root is the merged system's root, "" or "/" on a node; a test may point
	// it at a tree. systemd-sysext status is asked about the running system.
	Root   string
	Sysext Sysext
}

// Prove checks that want is what is merged: systemd-sysext status lists the
// extension (or not, for Absent), and the merged
// /usr/lib/extension-release.d/extension-release.NAME has the digest of the
// installed image's. It returns a *ProofError naming what differs, or the
// error that kept it from looking.
func (p Prover) Prove(ctx context.Context, want Expect) error {
	if err := extension.ValidateName(want.Name); err != nil {
		return err
	}
	merged, err := p.Sysext.Status(ctx)
	if err != nil {
		return err
	}
	root := p.Root
	if root == "" {
		root = "/"
	}
	path := filepath.Join(root, extension.ReleasePath(want.Name))
	// Read inside the root: a symlink in the tree cannot point at the host.
	data, readErr := inroot.ReadFile(root, extension.ReleasePath(want.Name), extension.MaxReleaseSize)
	fail := func(format string, args ...any) error {
		return &ProofError{Expect: want, Reason: fmt.Sprintf(format, args...)}
	}
	listed := "no extension"
	if names := merged.Names(); len(names) > 0 {
		listed = "only " + strings.Join(names, ", ")
	}
	if want.Absent {
		if merged.Has(want.Name) {
			return fail("systemd-sysext still lists %s as merged", want.Name)
		}
		if readErr == nil {
			return fail("the merged /usr still has %s", path)
		}
		return nil
	}
	if !merged.Has(want.Name) {
		return fail("systemd-sysext lists %s as merged", listed)
	}
	if readErr != nil {
		if errors.Is(readErr, os.ErrNotExist) {
			return fail("the merged /usr has no %s", path)
		}
		return fmt.Errorf("prove %s: %w", want, readErr)
	}
	if want.Release != "" {
		if got := ReleaseDigest(data); got != want.Release {
			return fail("the merged %s is another image's (%s, the installed image has %s)", path, extension.ShortDigest(string(got)), extension.ShortDigest(string(want.Release)))
		}
	} else if want.Fields != nil {
		got, err := extension.ParseRelease(data)
		if err != nil {
			return fail("the merged %s cannot be read: %v", path, err)
		}
		if !got.Equal(want.Fields) {
			return fail("the merged %s is another image's (%s)", path, releaseDiff(got, want.Fields))
		}
	}
	return nil
}

// releaseDiff names the first field that differs, the version first.
func releaseDiff(got, want *extension.Release) string {
	keys := append([]string{extension.FieldSysextVersionID, extension.FieldImageVersion}, want.Keys()...)
	keys = append(keys, got.Keys()...)
	for _, k := range keys {
		g, gok := got.Lookup(k)
		w, wok := want.Lookup(k)
		if g != w || gok != wok {
			return fmt.Sprintf("%s=%q, the installed image has %q", k, g, w)
		}
	}
	return "same fields"
}
