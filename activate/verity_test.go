package activate

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sysext/sysext/extension"
	"github.com/sysext/sysext/fsimage"
)

func signedDDI(name string) Image {
	return Image{Name: name, Format: fsimage.GPT, Meta: extension.Metadata{Name: name}, Verity: &ImageVerity{RootHash: strings.Repeat("ab", 32), Signed: true}}
}

// The preflight on signed disk images: refused where the kernel cannot set
// up dm-verity (the merge would fail), warned (refused with --strict)
// where it would merge unenforced, silent where it is enforced.
func TestPreflightVerity(t *testing.T) {
	enforcing := VerityFacts{DeviceMapper: true, DMVerity: true, Userspace: true, SystemdVersion: 257}
	base := Facts{Filesystems: map[string]bool{"overlay": true, "erofs": true}, Modules: map[string]bool{}, SystemdVersion: 257}
	for _, tc := range []struct {
		name    string
		verity  VerityFacts
		offline bool
		img     Image
		strict  bool
		refuse  bool
		finding string
	}{
		{"no device-mapper", VerityFacts{Userspace: true, SystemdVersion: 257}, false, signedDDI("a"), false, true, "no device-mapper with dm-verity"},
		{"no device-mapper, offline", VerityFacts{SystemdVersion: 257}, true, signedDDI("a"), false, false, "on the running kernel"},
		{"enforced", enforcing, false, signedDDI("a"), true, false, ""},
		{"systemd 252", VerityFacts{DeviceMapper: true, DMVerity: true, Userspace: true, SystemdVersion: 252}, false, signedDDI("a"), false, false, "takes no image policy"},
		{"systemd 252 strict", VerityFacts{DeviceMapper: true, DMVerity: true, Userspace: true, SystemdVersion: 252}, false, signedDDI("a"), true, true, "takes no image policy"},
		{"no signature check", VerityFacts{DeviceMapper: true, DMVerity: true, SystemdVersion: 257}, false, signedDDI("a"), true, true, "nothing here can check the root hash signature"},
		{"unsigned image, enforcing host", enforcing, false, Image{Name: "u", Format: fsimage.GPT, Verity: &ImageVerity{RootHash: "aa"}}, true, false, ""},
		{"plain image", VerityFacts{}, false, Image{Name: "p", Format: fsimage.EROFS}, true, false, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := base
			f.Verity, f.Offline = tc.verity, tc.offline
			rep := Preflight(f, []Image{tc.img}, tc.strict)
			var got []string
			for _, x := range rep.Findings {
				if x.Check == CheckVerity {
					got = append(got, x.String())
				}
			}
			if (rep.Err() != nil) != tc.refuse {
				t.Errorf("refused = %v, want %v (%v)", rep.Err(), tc.refuse, got)
			}
			if tc.finding == "" && len(got) > 0 || tc.finding != "" && (len(got) != 1 || !strings.Contains(got[0], tc.finding)) {
				t.Errorf("findings %q, want one with %q", got, tc.finding)
			}
			if rep.Verity == nil || *rep.Verity != tc.verity {
				t.Errorf("report's verity facts %+v", rep.Verity)
			}
		})
	}
}

// The policy goes where each systemd reads it, never verity+signed, and
// never a drop-in a systemd without --image-policy= would choke on.
func TestImagePolicyFiles(t *testing.T) {
	for _, tc := range []struct {
		v       int
		files   []string
		refresh bool
	}{
		{252, nil, false},
		{253, nil, false},
		{0, []string{ImagePolicyConf}, false},
		{254, []string{ImagePolicyConf, ImagePolicyDropIn}, true},
		{257, []string{ImagePolicyConf, ImagePolicyDropIn}, true},
		{258, []string{ImagePolicyConf, ImagePolicyDropIn}, true},
		{259, []string{ImagePolicyConf, ImagePolicyDropIn}, false}, // reads sysext.conf
	} {
		root := t.TempDir()
		written, err := SetImagePolicy(root, tc.v)
		if len(tc.files) == 0 {
			if err == nil || len(written) > 0 {
				t.Errorf("systemd %d: wrote %v (%v)", tc.v, written, err)
			}
			continue
		}
		if err != nil || len(written) != len(tc.files) {
			t.Fatalf("systemd %d: %v %v", tc.v, written, err)
		}
		for _, f := range tc.files {
			b, err := os.ReadFile(filepath.Join(root, f))
			if err != nil || !strings.Contains(string(b), "root=signed+absent:usr=signed+absent") || strings.Contains(string(b), "verity+signed") {
				t.Errorf("systemd %d: %s: %q %v", tc.v, f, b, err)
			}
		}
		if !ImagePolicySet(root, tc.v) {
			t.Errorf("systemd %d: not seen as set", tc.v)
		}
		if again, _ := SetImagePolicy(root, tc.v); len(again) != 0 {
			t.Errorf("systemd %d: rewrote %v", tc.v, again)
		}
		want := tc.refresh && tc.v >= 254
		if got := RefreshArgs(root, tc.v); (len(got) == 1) != want {
			t.Errorf("systemd %d: refresh args %v", tc.v, got)
		}
	}
	root := t.TempDir()
	SetImagePolicy(root, 257)
	b, _ := os.ReadFile(filepath.Join(root, ImagePolicyDropIn))
	if !strings.Contains(string(b), "ExecStart=\nExecStart=systemd-sysext refresh --image-policy=") {
		t.Errorf("drop-in does not reset ExecStart:\n%s", b)
	}
}
