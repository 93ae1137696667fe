package main

import (
	"context"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/sysext/sysext/oci"
	"github.com/sysext/sysext/recipe"
	"github.com/sysext/sysext/verify"
)

func init() { register("butane", newButaneCommand) }

// butaneOptions are the flags of `sysext butane`.
type butaneOptions struct {
	Name       string
	Variant    string
	Key        string
	BinaryURL  string
	BinaryHash string
	Binary     string
}

func newButaneCommand() *cobra.Command {
	var opts butaneOptions
	c := &cobra.Command{
		Use:   "butane REF [--name NAME] [--variant flatcar|fcos] [--key cosign.pub]",
		Short: "Print a Butane snippet that installs an extension on first boot and keeps it updated",
		Long: `Print a Butane config (Flatcar or Fedora CoreOS) with a oneshot unit that
runs 'sysext pull REF' on first boot (until the extension is installed)
and enables sysext-update.timer. With --key the public key is embedded and
required; otherwise the node's trust policy decides. Turn it into Ignition
with 'butane --strict'.

Neither Flatcar nor Fedora CoreOS ships sysext itself. With --binary-url,
Ignition downloads the sysext binary (to /opt/bin on Flatcar,
/usr/local/bin on Fedora CoreOS) and checks it against --binary-hash, or
the sha512 of --binary FILE (the file you serve at that URL), and the
snippet carries the update service and timer units. Without --binary-url
the snippet expects an OS image that has sysext and its units, and says
so on stderr and in its header.`,
		Example: `  sysext butane ghcr.io/acme/ext/tailscale:1.76 --key cosign.pub \
      --binary-url https://example.com/sysext --binary bin/sysext > tailscale.bu
  sysext butane ghcr.io/acme/ext/docker:27 --variant fcos --binary-url https://example.com/sysext \
      --binary-hash sha512-HEX`,
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
	f.StringVar(&opts.Binary, "binary", "", "the sysext binary `FILE` served at --binary-url: its sha512 becomes the verification hash")
	return c
}

func runButane(_ context.Context, c *cobra.Command, opts butaneOptions, ref string) error {
	if _, err := oci.ParseReference(ref); err != nil {
		return err
	}
	bo := recipe.ButaneOptions{Ref: ref, Name: opts.Name, Variant: opts.Variant, BinaryURL: opts.BinaryURL, BinaryHash: opts.BinaryHash}
	if opts.Binary != "" && opts.BinaryURL == "" {
		return usageError("--binary describes the file at --binary-url: give --binary-url URL")
	}
	if opts.Binary != "" && opts.BinaryHash != "" {
		return usageError("give --binary FILE or --binary-hash, not both")
	}
	if opts.Binary != "" {
		h, err := recipe.IgnitionHash(opts.Binary)
		if err != nil {
			return fmt.Errorf("--binary: %w", err)
		}
		bo.BinaryHash = h
	}
	if opts.Key != "" {
		key, err := os.ReadFile(opts.Key)
		if err != nil {
			return fmt.Errorf("--key: %w", err)
		}
		if _, err := verify.LoadPublicKey(key); err != nil {
			return usageError("--key %s: not a cosign public key (cosign.pub): %v", opts.Key, err)
		}
		bo.Key = key
	}
	s, err := recipe.Butane(bo)
	if err != nil {
		return usageError("%v", err)
	}
	for _, n := range recipe.ButaneNotes(bo) {
		fmt.Fprintf(c.ErrOrStderr(), "sysext: warning: %s\n", n)
	}
	_, err = fmt.Fprint(c.OutOrStdout(), s)
	return err
}
