package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sysext/sysext/internal/testenv"
)

// The disk image commands a publisher types: a verity key pair, a signed
// build, inspect of the file (text and JSON), and the usage errors.
func TestDDICommands(t *testing.T) {
	testenv.RequireTool(t, "veritysetup")
	testenv.RequireTool(t, "mkfs.erofs")
	dir := t.TempDir()
	prefix := filepath.Join(dir, "verity")
	if out, errs, code := runCLI(t, "generate-key-pair", "--x509", "--subject", "ACME extensions", "--output-key-prefix", prefix); code != exitOK {
		t.Fatalf("generate-key-pair --x509: %d %s %s", code, out, errs)
	}
	if st, err := os.Stat(prefix + ".key"); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v %v", st, err)
	}
	if _, errs, code := runCLI(t, "generate-key-pair", "--x509", "--output-key-prefix", prefix); code == exitOK || !strings.Contains(errs, "already exists") {
		t.Fatalf("overwrote the key pair: %s", errs)
	}
	tree := exampleTree(t)
	out, errs, code := runCLI(t, "build", tree, "--name", "sysext-hello", "--version", "1.0", "--arch", "x86-64", "--format", "ddi",
		"--sign-key", prefix+".key", "--certificate", prefix+".crt", "-o", dir+"/", "--json")
	if code != exitOK {
		t.Fatalf("build --format ddi: %d %s", code, errs)
	}
	var built struct {
		Path string `json:"path"`
		DDI  struct {
			RootHash  string `json:"root_hash"`
			Builder   string `json:"builder"`
			Signature struct {
				Certificate struct{ Subject string } `json:"certificate"`
			} `json:"signature"`
		} `json:"ddi"`
	}
	if err := json.Unmarshal([]byte(out), &built); err != nil || len(built.DDI.RootHash) != 64 || built.DDI.Signature.Certificate.Subject != "CN=ACME extensions" || built.DDI.Builder == "" {
		t.Fatalf("build --json: %v %s", err, out)
	}
	out, _, code = runCLI(t, "inspect", built.Path)
	for _, want := range []string{"format:         gpt", "partition 3:    root-verity-sig (x86-64)", "root hash:      " + built.DDI.RootHash,
		"hash tree:      matches the data", "signed by:      CN=ACME extensions", "signature:      valid over the root hash"} {
		if code != exitOK || !strings.Contains(out, want) {
			t.Errorf("inspect does not show %q:\n%s", want, out)
		}
	}
	out, _, _ = runCLI(t, "inspect", built.Path, "--json")
	var j struct {
		DDI struct {
			HashTreeOK bool `json:"hash_tree_ok"`
			Signature  struct {
				Valid       bool `json:"valid"`
				Certificate struct {
					Fingerprint string `json:"fingerprint"`
				} `json:"certificate"`
			} `json:"signature"`
			Partitions []struct{ Designator string } `json:"partitions"`
		} `json:"ddi"`
	}
	if err := json.Unmarshal([]byte(out), &j); err != nil || !j.DDI.HashTreeOK || !j.DDI.Signature.Valid || len(j.DDI.Signature.Certificate.Fingerprint) != 64 || len(j.DDI.Partitions) != 3 {
		t.Fatalf("inspect --json: %v %s", err, out)
	}

	// A changed byte in the data partition: inspect says which link broke.
	data, _ := os.ReadFile(built.Path)
	data[20480+100] ^= 1
	bad := filepath.Join(dir, "bad.raw")
	os.WriteFile(bad, data, 0o644)
	out, _, _ = runCLI(t, "inspect", bad)
	if !strings.Contains(out, "hash tree:      DOES NOT MATCH") {
		t.Errorf("inspect of a tampered image:\n%s", out)
	}
	// Push refuses it, with the chunk index (the default, which reads the
	// data for the index) and without.
	for _, extra := range [][]string{nil, {"--no-chunk-index"}} {
		args := append([]string{"push", bad, "oci:" + filepath.Join(t.TempDir(), "layout") + ":bad", "-q"}, extra...)
		if _, errs, code := runCLI(t, args...); code == exitOK || !strings.Contains(errs, "root hash") {
			t.Errorf("push %v of a tampered image: exit %d, %s", extra, code, errs)
		}
	}

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--format", "ddi", "--sign-key", prefix + ".key"}, "--sign-key and --certificate go together"},
		{[]string{"--format", "erofs", "--fs", "squashfs"}, "are for --format ddi"},
		{[]string{"--format", "ddi", "--fs", "ext4"}, "--fs ext4"},
		{[]string{"--format", "ext4"}, "use squashfs, erofs or ddi"},
	} {
		_, errs, code := runCLI(t, append([]string{"build", tree, "--name", "x", "--version", "1", "-o", t.TempDir() + "/"}, tc.args...)...)
		if code != exitUsage || !strings.Contains(errs, tc.want) {
			t.Errorf("build %v: exit %d, %s", tc.args, code, errs)
		}
	}
	if _, errs, code := runCLI(t, "generate-key-pair", "--subject", "x"); code != exitUsage || !strings.Contains(errs, "are for --x509") {
		t.Errorf("--subject without --x509: %d %s", code, errs)
	}
}

// check --preflight says what this host offers for signed disk images.
func TestPreflightReportsVerity(t *testing.T) {
	out, _, _ := runCLI(t, "check", "--preflight", "--json")
	var rep struct {
		Verity *struct {
			DeviceMapper   *bool `json:"device_mapper"`
			DMVerity       *bool `json:"dm_verity"`
			Userspace      *bool `json:"userspace_check"`
			SystemdVersion *int  `json:"systemd_version"`
		} `json:"verity"`
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil || rep.Verity == nil || rep.Verity.DeviceMapper == nil || rep.Verity.DMVerity == nil || rep.Verity.Userspace == nil || rep.Verity.SystemdVersion == nil {
		t.Fatalf("check --preflight --json: %v %s", err, out)
	}
	out, _, _ = runCLI(t, "check", "--preflight")
	if !strings.Contains(out, "verity: device-mapper ") || !strings.Contains(out, "verity: a signed disk image here: ") {
		t.Fatalf("check --preflight:\n%s", out)
	}
}
