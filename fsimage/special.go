package fsimage

import (
	"context"
	"encoding/binary"
	"fmt"
	"io/fs"
	"sort"
	"strconv"
	"strings"
)

// capabilityXattr holds a file's capabilities (vfs_cap_data).
const capabilityXattr = "security.capability"

// SpecialFile is a file whose power on the host does not come from its
// content alone: once merged into /usr it is a setuid or setgid program, a
// program with file capabilities, or a device node.
type SpecialFile struct {
	Path     string      // slash-separated, relative to the image's root
	Mode     fs.FileMode // type and permissions, setuid/setgid included
	UID, GID uint32
	// Capabilities are the file capabilities in getcap's words
	// ("cap_net_raw=ep"), "" when the file has none.
	Capabilities string
	// Major and Minor number a device node.
	Major, Minor uint32
}

// Setuid, Setgid and Device say what makes the file special.
func (f SpecialFile) Setuid() bool { return f.Mode&fs.ModeSetuid != 0 }
func (f SpecialFile) Setgid() bool { return f.Mode&fs.ModeSetgid != 0 }
func (f SpecialFile) Device() bool { return f.Mode&fs.ModeDevice != 0 }

// DeviceString is "char 1:3" or "block 8:0" for a device node, "" otherwise.
func (f SpecialFile) DeviceString() string {
	switch {
	case f.Mode&fs.ModeCharDevice != 0:
		return fmt.Sprintf("char %d:%d", f.Major, f.Minor)
	case f.Device():
		return fmt.Sprintf("block %d:%d", f.Major, f.Minor)
	}
	return ""
}

// readSpecial walks the whole image and keeps its special files, sorted
// by path. capsRead is false when the reader cannot see xattrs.
func readSpecial(ctx context.Context, t tree) (files []SpecialFile, capsRead bool, err error) {
	capsRead, err = t.walk(ctx, func(m fileMeta) error {
		f := SpecialFile{Path: m.path, Mode: m.mode, UID: m.uid, GID: m.gid}
		special := false
		if !m.mode.IsDir() && m.mode&(fs.ModeSetuid|fs.ModeSetgid) != 0 {
			special = true
		}
		if m.mode&fs.ModeDevice != 0 {
			f.Major, f.Minor = decodeDev(m.rdev)
			special = true
		}
		if m.capability != nil {
			f.Capabilities = FormatCapabilities(m.capability)
			special = true
		}
		if special {
			files = append(files, f)
		}
		return nil
	})
	if err != nil {
		return nil, false, fmt.Errorf("list special files: %w", err)
	}
	sort.Slice(files, func(i, j int) bool { return files[i].Path < files[j].Path })
	return files, capsRead, nil
}

// decodeDev splits a device number as squashfs and EROFS store it (Linux's
// new_encode_dev: minor's low byte, 12 bits of major, the rest of minor).
func decodeDev(d uint32) (major, minor uint32) {
	return (d >> 8) & 0xFFF, d&0xFF | (d>>12)&0xFFF00
}

// capNames are the capability names by number (linux/capability.h).
var capNames = []string{
	"cap_chown", "cap_dac_override", "cap_dac_read_search", "cap_fowner", "cap_fsetid",
	"cap_kill", "cap_setgid", "cap_setuid", "cap_setpcap", "cap_linux_immutable",
	"cap_net_bind_service", "cap_net_broadcast", "cap_net_admin", "cap_net_raw", "cap_ipc_lock",
	"cap_ipc_owner", "cap_sys_module", "cap_sys_rawio", "cap_sys_chroot", "cap_sys_ptrace",
	"cap_sys_pacct", "cap_sys_admin", "cap_sys_boot", "cap_sys_nice", "cap_sys_resource",
	"cap_sys_time", "cap_sys_tty_config", "cap_mknod", "cap_lease", "cap_audit_write",
	"cap_audit_control", "cap_setfcap", "cap_mac_override", "cap_mac_admin", "cap_syslog",
	"cap_wake_alarm", "cap_block_suspend", "cap_audit_read", "cap_perfmon", "cap_bpf",
	"cap_checkpoint_restore",
}

// FormatCapabilities renders a security.capability value (vfs_cap_data,
// revision 1, 2 or 3) the way getcap does: capabilities grouped by their
// flags, "cap_net_admin,cap_net_raw=ep"; a revision 3 value names the user
// namespace's root ("[rootid=1000]"). A value it cannot parse is shown as
// such, never dropped: the kernel may still honour it.
func FormatCapabilities(v []byte) string {
	if len(v) < 4 {
		return fmt.Sprintf("unparsed (%d bytes)", len(v))
	}
	magic := binary.LittleEndian.Uint32(v)
	effective := magic&1 != 0
	var words int
	switch magic &^ 1 {
	case 0x01000000:
		words = 1
	case 0x02000000, 0x03000000:
		words = 2
	default:
		return fmt.Sprintf("unparsed (revision %#x)", magic&^1)
	}
	need := 4 + 8*words
	if magic&^1 == 0x03000000 {
		need += 4
	}
	if len(v) != need {
		return fmt.Sprintf("unparsed (%d bytes)", len(v))
	}
	var permitted, inheritable uint64
	for i := range words {
		permitted |= uint64(binary.LittleEndian.Uint32(v[4+8*i:])) << (32 * i)
		inheritable |= uint64(binary.LittleEndian.Uint32(v[8+8*i:])) << (32 * i)
	}
	groups := map[string][]string{}
	var order []string
	for c := range 64 {
		bit := uint64(1) << c
		flags := ""
		if effective && permitted&bit != 0 {
			flags += "e"
		}
		if inheritable&bit != 0 {
			flags += "i"
		}
		if permitted&bit != 0 {
			flags += "p"
		}
		if flags == "" {
			continue
		}
		name := "cap_" + strconv.Itoa(c)
		if c < len(capNames) {
			name = capNames[c]
		}
		if groups[flags] == nil {
			order = append(order, flags)
		}
		groups[flags] = append(groups[flags], name)
	}
	parts := make([]string, 0, len(order)+1)
	for _, flags := range order {
		parts = append(parts, strings.Join(groups[flags], ",")+"="+flags)
	}
	if len(parts) == 0 {
		parts = append(parts, "=")
	}
	if magic&^1 == 0x03000000 {
		parts = append(parts, fmt.Sprintf("[rootid=%d]", binary.LittleEndian.Uint32(v[need-4:])))
	}
	return strings.Join(parts, " ")
}
