package main

import (
	"os"

	"github.com/spf13/cobra"
)

func init() { register("inspect", newInspectCommand) }

// inspectOptions are shared by inspecting a file (inspect_file.go) and a
// registry or layout reference (inspect_ref.go).
type inspectOptions struct {
	JSON      bool
	OSRelease string // host os-release to judge compatibility against; "" = the host's
	PlainHTTP bool
}

func newInspectCommand() *cobra.Command {
	var opts inspectOptions
	c := &cobra.Command{
		Use:   "inspect FILE.raw | REF",
		Short: "Show an extension's metadata and whether it would merge on this host",
		Long: `Show an extension image's name, version, format, architecture, ID, level,
scope, upheld units, size and digest, and whether systemd-sysext would merge
it on this host (or the os-release given with --os-release), and why not.
FILE is read without mounting; REF (host/repo:tag, @sha256:..., oci:PATH[:tag])
is judged from its manifests without downloading the image.`,
		Args: argsUsage(cobra.ExactArgs(1)),
		RunE: func(c *cobra.Command, args []string) error {
			if _, err := os.Stat(args[0]); err == nil {
				return runInspectFile(c, opts, args[0])
			}
			return runInspectRef(c, opts, args[0])
		},
	}
	c.Flags().BoolVar(&opts.JSON, "json", false, "print JSON")
	c.Flags().StringVar(&opts.OSRelease, "os-release", "", "judge compatibility against this os-release file (default: the host's)")
	c.Flags().BoolVar(&opts.PlainHTTP, "plain-http", false, "use HTTP instead of HTTPS for the registry (automatic for loopback)")
	return c
}
