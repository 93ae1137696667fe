package main

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/sysext/sysext/recipe"
)

func init() { register("sysupdate", newSysupdateCommand) }

// sysupdateOptions are the flags of `sysext sysupdate`.
type sysupdateOptions struct {
	URL       string
	Dir       string
	Output    string
	TargetDir string
	Link      string
	Instances int
}

func newSysupdateCommand() *cobra.Command {
	var opts sysupdateOptions
	c := &cobra.Command{
		Use:   "sysupdate NAME --url BASE [--dir DIR] [--output DIR]",
		Short: "Write a systemd-sysupdate transfer file and SHA256SUMS for an extension's images",
		Long: `For users who update extensions with systemd-sysupdate rather than
'sysext pull': lists NAME-VERSION-ARCH.raw in --dir (default: the current
directory), writes their sha256 to DIR/SHA256SUMS (keeping the lines of
other files already there), and writes NAME.conf, a sysupdate.d(5)
transfer that fetches NAME-@v-%a.raw from BASE (an http(s) URL where DIR
is published, or a local directory), keeps versions in /opt/extensions/NAME
and points /etc/extensions/NAME.raw at the current one. Install it as
/etc/sysupdate.NAME.d/NAME.conf.

SHA256SUMS is not signed (Verify=false): prefer 'sysext pull', which checks
signatures.`,
		Example: `  sysext sysupdate tailscale --url https://example.com/extensions/tailscale/ --dir out/`,
		Args:    argsUsage(cobra.ExactArgs(1)),
		RunE: func(c *cobra.Command, args []string) error {
			return runSysupdate(c.Context(), c, opts, args[0])
		},
	}
	f := c.Flags()
	f.StringVar(&opts.URL, "url", "", "where the images and SHA256SUMS are published: an http(s) `BASE` URL or a directory; required")
	f.StringVar(&opts.Dir, "dir", ".", "directory with the NAME-VERSION-ARCH.raw images; SHA256SUMS is written here")
	f.StringVarP(&opts.Output, "output", "o", "", "directory for NAME.conf (default: --dir)")
	f.StringVar(&opts.TargetDir, "target-dir", "", "where sysupdate keeps versions on the node (default /opt/extensions/NAME)")
	f.StringVar(&opts.Link, "link", "", "the activation link on the node (default /etc/extensions/NAME.raw)")
	f.IntVar(&opts.Instances, "instances", 3, "versions sysupdate keeps")
	return c
}

func runSysupdate(ctx context.Context, c *cobra.Command, opts sysupdateOptions, name string) error {
	if opts.URL == "" {
		return usageError("sysupdate needs --url BASE: where the images will be published")
	}
	res, err := recipe.Sysupdate(ctx, recipe.SysupdateOptions{
		Name: name, ImagesDir: opts.Dir, URL: opts.URL, Output: opts.Output,
		TargetDir: opts.TargetDir, Link: opts.Link, InstancesMax: opts.Instances,
	})
	if err != nil {
		return err
	}
	out := c.OutOrStdout()
	for _, img := range res.Images {
		fmt.Fprintf(out, "listed %s\n", img)
	}
	fmt.Fprintf(out, "wrote %s\nwrote %s\n", res.Sums, res.Conf)
	return nil
}
