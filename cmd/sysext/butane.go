package main

import (
	"context"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/sysext/sysext/recipe"
)

func init() { register(newButaneCommand) }

// butaneOptions are the flags of `sysext butane`.
type butaneOptions struct {
	Name       string
	Variant    string
	Key        string
	BinaryURL  string
	BinaryHash string
}

func newButaneCommand() *cobra.Command {
	var opts butaneOptions
	c := &cobra.Command{
		Use:   "butane REF [--name NAME] [--variant flatcar|fcos] [--key cosign.pub]",
		Short: "Print a Butane snippet that installs an extension on first boot and keeps it updated",
		Long: `Print a Butane config (Flatcar or Fedora CoreOS) with a oneshot unit that
runs 'sysext pull REF' on first boot (until the extension is installed)
and enables sysext-update.timer. With --key the public key is embedded and
required; otherwise the node's trust policy decides. With --binary-url,
Ignition also downloads the sysext binary (to /opt/bin on Flatcar,
/usr/local/bin on Fedora CoreOS) and the snippet carries the update
service and timer units. Turn it into Ignition with 'butane --strict'.
` + exitStatusHelp,
		Example: `  sysext butane ghcr.io/acme/ext/tailscale:1.76 --key cosign.pub > tailscale.bu
  sysext butane ghcr.io/acme/ext/docker:27 --variant fcos --binary-url https://example.com/sysext`,
		Args: argsUsage(cobra.ExactArgs(1)),
		RunE: func(c *cobra.Command, args []string) error {
			return runButane(c.Context(), c, opts, args[0])
		},
	}
	f := c.Flags()
	f.StringVar(&opts.Name, "name", "", "the extension's name (default: the repository's last path component)")
	f.StringVar(&opts.Variant, "variant", "flatcar", "flatcar or fcos")
	f.StringVar(&opts.Key, "key", "", "embed this cosign public key `FILE` and require its signature")
	f.StringVar(&opts.BinaryURL, "binary-url", "", "let Ignition download the sysext binary from `URL`")
	f.StringVar(&opts.BinaryHash, "binary-hash", "", "Ignition verification hash of the binary (sha512-HEX or sha256-HEX)")
	return c
}

func runButane(_ context.Context, c *cobra.Command, opts butaneOptions, ref string) error {
	bo := recipe.ButaneOptions{Ref: ref, Name: opts.Name, Variant: opts.Variant, BinaryURL: opts.BinaryURL, BinaryHash: opts.BinaryHash}
	if opts.Variant != "flatcar" && opts.Variant != "fcos" {
		return usageError("--variant %q: use flatcar or fcos", opts.Variant)
	}
	if opts.Key != "" {
		key, err := os.ReadFile(opts.Key)
		if err != nil {
			return fmt.Errorf("--key: %w", err)
		}
		bo.Key = key
	}
	s, err := recipe.Butane(bo)
	if err != nil {
		return usageError("%v", err)
	}
	_, err = fmt.Fprint(c.OutOrStdout(), s)
	return err
}
