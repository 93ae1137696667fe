package extension_test

import (
	"fmt"

	"github.com/sysext/sysext/extension"
)

// systemd-sysext's rules, without systemd: would this extension merge on
// a Debian 12 host?
func ExampleCompatible() {
	host, _ := extension.ParseRelease([]byte("ID=debian\nVERSION_ID=\"12\"\n"))
	for _, file := range []string{
		"ID=debian\nVERSION_ID=12\nARCHITECTURE=x86-64\n",
		"ID=debian\nVERSION_ID=13\n",
		"ID=_any\n",
	} {
		rel, err := extension.ParseRelease([]byte(file))
		if err != nil {
			fmt.Println(err)
			continue
		}
		if err := extension.Compatible(rel, extension.Host{OSRelease: host, Arch: "x86-64"}); err != nil {
			fmt.Println("no:", err)
			continue
		}
		fmt.Println("yes")
	}
	// Output:
	// yes
	// no: VERSION_ID=13 does not match the host's VERSION_ID=12
	// yes
}

// Versions in systemd's order (the UAPI version format): a '~' pre-release
// sorts before the release, numbers compare as numbers.
func ExampleCompareVersions() {
	fmt.Println(extension.CompareVersions("1.10", "1.9") > 0)
	fmt.Println(extension.CompareVersions("2.0~rc1", "2.0") < 0)
	fmt.Println(extension.CompareVersions("24.0.9", "24.0.9") == 0)
	// Output:
	// true
	// true
	// true
}

// Untrusted text is shown as it is, except what would not show as itself.
func ExampleEscape() {
	fmt.Println(extension.Escape("docker 24.0.9"))
	fmt.Println(extension.Escape("doc\u202ekcod\x1b[2J"))
	fmt.Println(extension.ShortDigest("sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"))
	// Output:
	// docker 24.0.9
	// doc\u202ekcod\x1b[2J
	// 0123456789ab
}
