package fromimage

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"

	"github.com/sysext/sysext/atomicfile"
	"github.com/sysext/sysext/extension"
	"github.com/sysext/sysext/internal/tool"
)

// WriteConfext writes tree (holding etc/, as Prepare leaves it in
// Options.ConfextTree) as a systemd-confext image at output: squashfs,
// zstd, all files owned by root, timestamps from epoch, with
// etc/extension-release.d/extension-release.NAME carrying ID and
// VERSION_ID (or CONFEXT_LEVEL) so that it merges on the same OS as the
// system extension. The builder writes system extensions only (it insists
// on usr/), so the confext is written here with the same mksquashfs
// options. The image appears atomically or not at all.
func WriteConfext(ctx context.Context, tree, output string, m extension.Metadata, epoch int64, force bool) error {
	if err := extension.ValidateName(m.Name); err != nil {
		return err
	}
	rel := &extension.Release{}
	rel.Set(extension.FieldID, m.ID)
	if m.VersionID != "" {
		rel.Set(extension.FieldVersionID, m.VersionID)
	}
	if m.SysextLevel != "" {
		rel.Set("CONFEXT_LEVEL", m.SysextLevel)
	}
	dir := filepath.Join(tree, "etc", "extension-release.d")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "extension-release."+m.Name), rel.Format(), 0o644); err != nil {
		return err
	}
	out, err := atomicfile.Create(output, 0o644)
	if err != nil {
		return err
	}
	defer out.Close()
	e := strconv.FormatInt(epoch, 10)
	if _, err := tool.Run(ctx, "mksquashfs", tree, out.TempName(), "-noappend", "-all-root", "-root-mode", "0755",
		"-reproducible", "-mkfs-time", e, "-all-time", e, "-comp", "zstd", "-quiet", "-no-progress"); err != nil {
		return fmt.Errorf("confext %s: %w", output, err)
	}
	if err := out.Commit(force); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("%s already exists: use --force to replace it", output)
		}
		return err
	}
	return nil
}
