package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sort"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/sysext/sysext/extension"
)

// SchemaVersion is the state file's format version.
const SchemaVersion = 1

// maxStateSize bounds the state file we read; a node with hundreds of
// extensions writes a few hundred KiB.
const maxStateSize = 16 << 20

// State is the node's record of what sysext installed.
type State struct {
	Schema     int               `json:"schema"`
	Extensions map[string]*Entry `json:"extensions"`
}

// Names returns the installed extension names, sorted.
func (s *State) Names() []string {
	out := make([]string, 0, len(s.Extensions))
	for n := range s.Extensions {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// Entry is one installed extension.
type Entry struct {
	Name string `json:"name"`
	// Source is the reference update re-resolves (a tag), as given to pull or
	// expanded from a declaration.
	Source string `json:"source"`
	// Declared names the extensions.d file that declared it ("" when pulled
	// by hand); sync removes only declared or pulled entries of ours.
	Declared string `json:"declared,omitempty"`
	// Trust is what its updates check signatures with (zero: the updating
	// command's). States written before it have a string "policy" instead,
	// read into it (Entry.UnmarshalJSON).
	Trust Trust `json:"trust,omitzero"`
	// AllowUnsigned records --insecure-allow-unsigned so updates keep it.
	AllowUnsigned bool       `json:"allow_unsigned,omitempty"`
	Active        Install    `json:"active"`
	Previous      []Install  `json:"previous,omitempty"` // newest first
	Activation    Activation `json:"activation"`
	// Pending is the intent of a change in progress (see doc.go).
	Pending *Pending `json:"pending,omitempty"`
}

// Install is one stored version of an extension.
type Install struct {
	Version string `json:"version"`
	Arch    string `json:"arch"`
	File    string `json:"file"` // base name in the store's NAME directory
	Size    int64  `json:"size"`
	// ManifestDigest is the verified per-platform manifest.
	ManifestDigest digest.Digest `json:"manifest_digest"`
	// LayerDigest is the image file's own digest.
	LayerDigest digest.Digest `json:"layer_digest"`
	// ReleaseDigest is sha256 over the exact bytes of the image's
	// extension-release.NAME, recorded at install so activation proves the
	// merged file byte for byte. Empty in state written before it existed
	// (and for images that cannot be read, GPT): the proof then compares
	// the parsed fields.
	ReleaseDigest digest.Digest `json:"release_digest,omitempty"`
	// ResolvedDigest is what the source tag pointed to (an index or the
	// manifest): update compares the tag's digest with it, one request.
	ResolvedDigest digest.Digest `json:"resolved_digest,omitempty"`
	Reference      string        `json:"reference,omitempty"` // repo@digest installed
	Signer         string        `json:"signer,omitempty"`
	Unsigned       bool          `json:"unsigned,omitempty"`
	InstalledAt    time.Time     `json:"installed_at"`
	// Verity describes a disk image's dm-verity protection (nil for a
	// plain filesystem image).
	Verity *Verity `json:"verity,omitempty"`
}

// Verity is what a node checked of a disk image at install: its root hash
// and, when the trust policy named the certificate that signed it, who.
type Verity struct {
	RootHash string `json:"root_hash"`
	// Signer and CertificateSHA256 name the trusted certificate whose
	// signature over the root hash verified; empty when the policy named
	// none (the image may still carry a signature nobody checked).
	Signer            string `json:"signer,omitempty"`
	CertificateSHA256 string `json:"certificate_sha256,omitempty"`
}

// Activation records what happened after the link was switched.
type Activation struct {
	Status extension.ActivationStatus `json:"status,omitempty"`
	Reason string                     `json:"reason,omitempty"`
	// Tried is the stored file this activation switched to, so a run that
	// was killed during a rollback knows which version it was trying.
	Tried string    `json:"tried,omitempty"`
	At    time.Time `json:"at,omitempty"`
}

// Pending ops.
const (
	opActivate = "activate"
	opRemove   = "remove"
)

// Pending is a change whose intent is written before the link is touched.
type Pending struct {
	Op   string `json:"op"`
	Next *Entry `json:"next,omitempty"` // the entry once an activate completes
}

// CorruptStateError says the state file cannot be read. Images and links
// are left as they are.
type CorruptStateError struct {
	Path string
	Err  error
}

func (e *CorruptStateError) Error() string {
	return fmt.Sprintf("state file %s is unreadable (%v): the stored images and activation links were left as they are; move the file aside and pull the extensions again (or run 'sysext sync') to rebuild it", e.Path, e.Err)
}

func (e *CorruptStateError) Unwrap() error { return e.Err }

// readState reads the state file; a missing file is an empty state.
func readState(path string) (*State, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return &State{Schema: SchemaVersion, Extensions: map[string]*Entry{}}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("state file %s: %w", path, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("state file %s: %w", path, err)
	}
	if fi.Size() > maxStateSize {
		return nil, &CorruptStateError{path, fmt.Errorf("%d bytes, more than the %d allowed", fi.Size(), maxStateSize)}
	}
	var st State
	dec := json.NewDecoder(f)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&st); err != nil {
		return nil, &CorruptStateError{path, err}
	}
	if st.Schema != SchemaVersion {
		return nil, &CorruptStateError{path, fmt.Errorf("schema %d, this sysext reads %d", st.Schema, SchemaVersion)}
	}
	if st.Extensions == nil {
		st.Extensions = map[string]*Entry{}
	}
	for name, e := range st.Extensions {
		if err := e.validate(name); err != nil {
			return nil, &CorruptStateError{path, err}
		}
	}
	return &st, nil
}

// validate keeps names from the state file inside their directories.
func (e *Entry) validate(key string) error {
	if e == nil {
		return fmt.Errorf("extension %q: empty entry", key)
	}
	if e.Name != key {
		return fmt.Errorf("extension %q: entry names %q", key, e.Name)
	}
	if err := extension.ValidateName(e.Name); err != nil {
		return err
	}
	for _, in := range append([]Install{e.Active}, e.Previous...) {
		if err := validFile(in.File); err != nil {
			return fmt.Errorf("extension %s: %w", e.Name, err)
		}
	}
	if err := validFile(e.Activation.Tried); err != nil {
		return fmt.Errorf("extension %s: activation: %w", e.Name, err)
	}
	if e.Pending != nil && e.Pending.Next != nil {
		if err := e.Pending.Next.validate(key); err != nil {
			return err
		}
	}
	return nil
}

func (s *State) clone() *State {
	b, err := json.Marshal(s)
	if err != nil {
		panic(err) // plain structs always marshal
	}
	var c State
	if err := json.Unmarshal(b, &c); err != nil {
		panic(err)
	}
	if c.Extensions == nil {
		c.Extensions = map[string]*Entry{}
	}
	return &c
}

func (e *Entry) clone() *Entry {
	b, _ := json.Marshal(e)
	var c Entry
	_ = json.Unmarshal(b, &c)
	return &c
}
