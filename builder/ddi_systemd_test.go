package builder_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sysext/sysext/builder"
	"github.com/sysext/sysext/internal/testenv"
)

// systemd's own verdict on our disk images. This kernel has no
// device-mapper, so systemd cannot activate dm-verity here; but before it
// fails on that it checks the root hash signature in userspace against the
// certificates in /run/verity.d and logs the result. The tests assert on
// that log, never on the exit code (252 exits 0 after a failed merge).

const (
	verdictOK     = "Userspace PKCS#7 validation succeeded"
	verdictFailed = "Userspace PKCS#7 validation failed"
)

// signedDDIs builds the signed image of writeTree and a copy whose
// signature value has one character changed.
func signedDDIs(t *testing.T) (good, badSig string) {
	t.Helper()
	defer builder.UseDDIBuilder(builder.DDIByVeritysetup)()
	testenv.RequireTool(t, "veritysetup")
	requireTool(t, builder.EROFS)
	res, err := builder.Build(context.Background(), ddiOpts(t, writeTree(t, t.TempDir()), t.TempDir(), builder.EROFS, true))
	if err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(res.Path)
	sp := readDDI(t, res.Path).SignaturePartition()
	at := sp.Offset + int64(bytes.Index(data[sp.Offset:], []byte(`"}`))) - 20
	data[at] = map[bool]byte{true: 'B', false: 'A'}[data[at] == 'A']
	badSig = filepath.Join(t.TempDir(), filepath.Base(res.Path))
	if err := os.WriteFile(badSig, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return res.Path, badSig
}

type verdictCase struct {
	name, image, cert, want string
}

func verdictCases(t *testing.T) []verdictCase {
	good, badSig := signedDDIs(t)
	_, cert, foreign := signer(t)
	return []verdictCase{
		{"ours", good, cert, verdictOK},
		{"changed signature", badSig, cert, verdictFailed},
		{"foreign certificate", good, foreign, verdictFailed},
	}
}

// copyIn is the shell that puts image and certificate where systemd looks,
// under prefix ("" on the host, "$TREE" for a chroot).
func copyIn(prefix, image, cert string) string {
	return "mkdir -p " + prefix + "/run/verity.d\n" +
		"cp " + testenv.ShellQuote(image) + " " + prefix + "/run/extensions/sysext-test-hello.raw\n" +
		"cp " + testenv.ShellQuote(cert) + " " + prefix + "/run/verity.d/test.crt\n"
}

// The host's systemd-sysext 252 accepts our signature and refuses a
// changed one and a foreign certificate.
func TestSystemd252ChecksSignature(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.CleanupDeviceMapper(t)
	for _, tc := range verdictCases(t) {
		t.Run(tc.name, func(t *testing.T) {
			out, _ := testenv.RunInNamespace(t, copyIn("", tc.image, tc.cert)+"SYSTEMD_LOG_LEVEL=debug systemd-sysext merge 2>&1 || true\n", "SYSTEMD_LOG_LEVEL=debug")
			if !strings.Contains(out, tc.want) || tc.want == verdictFailed && strings.Contains(out, verdictOK) {
				t.Fatalf("systemd-sysext 252 did not log %q:\n%s", tc.want, tail(out))
			}
		})
	}
}

// systemd-sysext 257 (Debian 13's, in its own tree) gives the same
// verdicts.
func TestSystemd257ChecksSignature(t *testing.T) {
	tree := testenv.TrixieTree(t)
	testenv.CleanupDeviceMapper(t)
	for _, tc := range verdictCases(t) {
		t.Run(tc.name, func(t *testing.T) {
			out, _ := testenv.RunInTree(t, tree, copyIn(`"$TREE"`, tc.image, tc.cert), "SYSTEMD_LOG_LEVEL=debug systemd-sysext merge 2>&1 || true")
			if !strings.Contains(out, tc.want) || tc.want == verdictFailed && strings.Contains(out, verdictOK) {
				t.Fatalf("systemd-sysext 257 did not log %q:\n%s", tc.want, tail(out))
			}
		})
	}
}

// The root partition is a valid extension: with verity bypassed (the only
// way without device-mapper) both systemd versions merge it and its
// program runs from the merged /usr.
func TestDDIMergesWithVerityBypassed(t *testing.T) {
	good, _ := signedDDIs(t)
	testenv.CleanupDeviceMapper(t)
	run := "sysext-test-hello"
	t.Run("252", func(t *testing.T) {
		out, _ := testenv.RunInNamespace(t, copyIn("", good, good)+"systemd-sysext merge\n"+run+"\n", "SYSTEMD_DISSECT_VERITY_EMBEDDED=0")
		if !strings.Contains(out, helloVersion) {
			t.Fatalf("merged image does not run:\n%s", out)
		}
	})
	t.Run("257", func(t *testing.T) {
		tree := testenv.TrixieTree(t)
		out, _ := testenv.RunInTree(t, tree, copyIn(`"$TREE"`, good, good), "systemd-sysext --image-policy=root=unprotected+absent:usr=absent merge\n"+run)
		if !strings.Contains(out, helloVersion) {
			t.Fatalf("merged image does not run:\n%s", out)
		}
	})
}

// Where the kernel has device-mapper and dm-verity, the signed image
// merges under the policy sysext sets and a tampered one does not.
func TestDDIMergesUnderSignedPolicy(t *testing.T) {
	if !testenv.HasDeviceMapper() {
		t.Skip("this kernel has no device-mapper with dm-verity: a merge under root=signed+absent cannot run here (see docs/activation.md)")
	}
	tree := testenv.TrixieTree(t)
	good, badSig := signedDDIs(t)
	_, cert, _ := signer(t)
	policy := "--image-policy=root=signed+absent:usr=signed+absent"
	out, _ := testenv.RunInTree(t, tree, copyIn(`"$TREE"`, good, cert), "systemd-sysext "+policy+" merge\nsysext-test-hello\nsystemd-sysext unmerge")
	if !strings.Contains(out, helloVersion) {
		t.Fatalf("the signed image did not merge under %s:\n%s", policy, out)
	}
	out, _ = testenv.RunInTree(t, tree, copyIn(`"$TREE"`, badSig, cert), "systemd-sysext "+policy+" merge || true\nsysext-test-hello || true")
	if strings.Contains(out, helloVersion) {
		t.Fatalf("an image with a broken signature merged under %s:\n%s", policy, out)
	}
}

func tail(s string) string {
	lines := strings.Split(s, "\n")
	if len(lines) > 40 {
		lines = lines[len(lines)-40:]
	}
	return strings.Join(lines, "\n")
}
