package fromimage

import (
	"context"
	"fmt"

	"github.com/sysext/sysext/builder"
	"github.com/sysext/sysext/extension"
)

// WriteConfext writes tree (holding etc/, as Prepare leaves it in
// Options.ConfextTree) as a systemd-confext image at output: builder's
// confext kind, squashfs with builder's default compression and
// reproducible options, with etc/extension-release.d/extension-release.NAME
// carrying ID and VERSION_ID (or CONFEXT_LEVEL) so that it merges on the
// same OS as the system extension built with m. The image appears
// atomically or not at all; the tree is not changed.
func WriteConfext(ctx context.Context, tree, output string, m extension.Metadata, epoch int64, force bool) error {
	_, err := builder.Build(ctx, builder.Options{
		Kind:            builder.KindConfext,
		Tree:            tree,
		Meta:            m,
		Format:          builder.Squashfs,
		Output:          output,
		Force:           force,
		SourceDateEpoch: epoch,
	})
	if err != nil {
		return fmt.Errorf("confext: %w", err)
	}
	return nil
}
