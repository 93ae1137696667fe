package testenv

import (
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// ImageFile is what the kernel shows of a file in a mounted image.
type ImageFile struct {
	Mode string // octal permissions with set-ID and sticky bits, as find's %m: "4755"
	UID  string
	Type string // find's %y: f, d, l, c, b, p, s
	Caps string // getcap's text ("cap_net_raw=ep"), "" when none
	Sum  string // sha256 of a regular file's content
}

// ImageFiles mounts image (squashfs or EROFS) read-only through a loop
// device inside a private mount namespace, the way systemd-sysext would
// see it, and returns its files by path ("usr/bin/su"). The mount ends
// with the namespace. It needs root, unshare, mount and getcap.
func ImageFiles(t testing.TB, image string) map[string]ImageFile {
	t.Helper()
	RequireRoot(t)
	RequireTool(t, "unshare")
	RequireTool(t, "getcap")
	mnt := t.TempDir()
	// Records end with NUL: names may hold newlines.
	script := `set -e
mount -o loop,ro "$1" "$2"
cd "$2"
find . -mindepth 1 -printf 'F\t%P\t%m\t%U\t%y\0'
getcap -r . 2>/dev/null | while IFS= read -r l; do printf 'C\t%s\0' "$l"; done
find . -type f -printf '%P\0' | while IFS= read -r -d '' f; do printf 'S\t%s\t%s\0' "$f" "$(sha256sum < "$f" | cut -d' ' -f1)"; done
`
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "unshare", "-m", "--propagation", "private", "bash", "-c", script, "bash", image, mnt).CombinedOutput()
	if err != nil {
		t.Fatalf("mount %s: %v\n%s", image, err, out)
	}
	files := map[string]ImageFile{}
	for _, rec := range strings.Split(string(out), "\x00") {
		f := strings.Split(rec, "\t")
		switch {
		case len(f) == 5 && f[0] == "F":
			files[f[1]] = ImageFile{Mode: f[2], UID: f[3], Type: f[4]}
		case len(f) == 3 && f[0] == "S":
			e := files[f[1]]
			e.Sum = f[2]
			files[f[1]] = e
		case len(f) == 2 && f[0] == "C":
			// "./usr/bin/ping cap_net_raw=ep" (getcap 2.44+) or with " = ".
			line := strings.TrimPrefix(f[1], "./")
			i := strings.LastIndex(line, " ")
			if i < 0 {
				continue
			}
			name, caps := strings.TrimSuffix(strings.TrimSpace(line[:i]), " ="), line[i+1:]
			e := files[name]
			e.Caps = caps
			files[name] = e
		}
	}
	return files
}
