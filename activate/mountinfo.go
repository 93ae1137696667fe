package activate

import (
	"bufio"
	"bytes"
	"fmt"
	"strconv"
	"strings"
)

// Mount is one line of /proc/self/mountinfo (proc(5)), the fields the
// preflight needs.
type Mount struct {
	ID, Parent int
	Point      string // mount point, unescaped
	FSType     string
	Source     string
	SuperOpts  string
}

// ParseMountInfo parses /proc/self/mountinfo. Lines it cannot read are
// reported with their number; the kernel never writes such lines, so one
// means the file is not a mountinfo file.
func ParseMountInfo(data []byte) ([]Mount, error) {
	var out []Mount
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if strings.TrimSpace(line) == "" {
			continue
		}
		f := strings.Fields(line)
		sep := -1
		for i := 6; i < len(f); i++ {
			if f[i] == "-" {
				sep = i
				break
			}
		}
		if len(f) < 7 || sep < 0 || len(f) < sep+3 {
			return nil, fmt.Errorf("mountinfo line %d: not in proc(5) mountinfo format", n)
		}
		id, err1 := strconv.Atoi(f[0])
		parent, err2 := strconv.Atoi(f[1])
		if err1 != nil || err2 != nil {
			return nil, fmt.Errorf("mountinfo line %d: mount IDs are not numbers", n)
		}
		m := Mount{ID: id, Parent: parent, Point: unescapeMount(f[4]), FSType: f[sep+1], Source: unescapeMount(f[sep+2])}
		if len(f) > sep+3 {
			m.SuperOpts = f[sep+3]
		}
		out = append(out, m)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("mountinfo: %w", err)
	}
	return out, nil
}

// unescapeMount undoes the kernel's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// isOverlay reports whether m stacks a filesystem on others the way the
// kernel counts for its stacking limit: overlayfs (composefs mounts as an
// overlay whose source is "composefs") and the out-of-tree composefs module.
// systemd-sysext's own overlay (source "sysext") is left out: a refresh
// unmerges it before it merges again.
func isOverlay(m Mount) bool {
	if m.Source == "sysext" || m.Source == "confext" {
		return false
	}
	return m.FSType == "overlay" || m.FSType == "composefs" || m.Source == "composefs"
}

// Stacking is what the mount table says about the hierarchy systemd-sysext
// puts its overlay on.
type Stacking struct {
	// UsrLayers lists the overlays /usr already sits on (the root's and
	// /usr's own), bottom first, as "FSTYPE SOURCE on POINT".
	UsrLayers []string
	// EtcOverlay is set when /etc is its own overlay mount (a transient /etc).
	EtcOverlay string
}

// Depth is the number of overlays under /usr.
func (s Stacking) Depth() int { return len(s.UsrLayers) }

// AnalyzeStacking finds the overlays under /usr and a transient /etc. Every
// mount at "/" and at "/usr" counts, including ones hidden under a later
// mount at the same point, because an overlay mounted over an overlay
// stacks on it.
func AnalyzeStacking(mounts []Mount) Stacking {
	var s Stacking
	for _, point := range []string{"/", "/usr"} {
		for _, m := range mounts {
			if m.Point == point && isOverlay(m) {
				s.UsrLayers = append(s.UsrLayers, fmt.Sprintf("%s %s on %s", m.FSType, m.Source, m.Point))
			}
		}
	}
	for _, m := range mounts {
		if m.Point == "/etc" && isOverlay(m) {
			s.EtcOverlay = fmt.Sprintf("%s %s on /etc", m.FSType, m.Source)
		}
	}
	return s
}
