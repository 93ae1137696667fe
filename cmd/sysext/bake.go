package main

import (
	"context"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/sysext/sysext/builder"
	"github.com/sysext/sysext/extension"
	"github.com/sysext/sysext/oci"
	"github.com/sysext/sysext/publish"
	"github.com/sysext/sysext/recipe"
	"github.com/sysext/sysext/verify"
)

func init() { register("bake", newBakeCommand) }

// bakeOptions are the flags of `sysext bake`.
type bakeOptions struct {
	registryFlags
	Version     string
	Arch        string
	Format      string
	Compression string
	Options     []string
	SHA256      []string
	Mirror      string
	Cache       string
	Output      string
	Force       bool
	Digest      bool
	OS          string
	SysextLevel string
	VersionID   string
	JSON        bool
	Quiet       bool
	Push        string
	Append      bool
	AllowUnsig  bool
	Sign        bool
	Key         string
	MaxSize     sizeFlag
}

func (o *bakeOptions) AddFlags(c *cobra.Command) {
	f := c.Flags()
	f.StringVar(&o.Version, "version", "", "the upstream version to bake (see 'sysext recipes show NAME'); required")
	f.StringVar(&o.Arch, "arch", "", "architecture in systemd's naming (x86-64, arm64), or an OCI or uname name (default: the host's)")
	f.StringVar(&o.Format, "format", string(builder.Squashfs), "image format: squashfs or erofs")
	f.StringVar(&o.Compression, "compression", "", "compression, as for 'sysext build'")
	f.StringArrayVar(&o.Options, "option", nil, "set a recipe option, `NAME=VALUE` (repeatable; 'sysext recipes show' lists them)")
	f.StringArrayVar(&o.SHA256, "sha256", nil, "pin a download's sha256, `ID=HEX`, for downloads the upstream publishes no checksum for (repeatable)")
	f.StringVar(&o.Mirror, "mirror", "", "fetch https://HOST/PATH from `BASE`/HOST/PATH instead (an http(s) URL or a directory)")
	f.StringVar(&o.Cache, "cache", "", "keep verified downloads in `DIR` (default $XDG_CACHE_HOME/sysext/downloads)")
	f.StringVarP(&o.Output, "output", "o", "", "output file, or directory for NAME-VERSION-ARCH.raw (default: the current directory)")
	f.BoolVar(&o.Force, "force", false, "replace an existing output file")
	f.BoolVar(&o.Digest, "digest", false, "also hash the image and print its sha256 digest")
	f.StringVar(&o.OS, "os", extension.AnyID, "ID of the OS the extension is for, or _any")
	f.StringVar(&o.SysextLevel, "sysext-level", "", "SYSEXT_LEVEL the host must have (with --os)")
	f.StringVar(&o.VersionID, "version-id", "", "VERSION_ID the host must have (with --os)")
	f.BoolVar(&o.JSON, "json", false, "print the result as JSON")
	f.BoolVarP(&o.Quiet, "quiet", "q", false, "print only the image path (and pushed digest), no progress")
	f.StringVar(&o.Push, "push", "", "push the image to `REF` (host/repo:tag or oci:DIR[:tag]) after baking")
	f.BoolVar(&o.Append, "append", false, "with --push: keep the other architectures already at REF")
	f.BoolVar(&o.AllowUnsig, "allow-unsigned", false, "with --push --append: replace a signed index even though the new one is unsigned (or signed by another key)")
	f.BoolVar(&o.Sign, "sign", false, "with --push: sign what was pushed (needs --key)")
	f.StringVar(&o.Key, "key", "", "with --sign: cosign private key `FILE`")
	addMaxSizeFlag(c, &o.MaxSize, "downloaded archives")
	o.registryFlags.addFlags(c)
}

func newBakeCommand() *cobra.Command {
	var opts bakeOptions
	c := &cobra.Command{
		Use:   "bake NAME|FILE --version V [flags]",
		Short: "Download an upstream release and bake it into an extension with a recipe",
		Long: `Bake a system extension from a recipe: NAME from the built-in catalog
('sysext recipes list') or a recipe FILE (docs/recipes.md). The recipe's
downloads for --version and --arch are fetched (through --mirror when
given), checked against their sha256 (pinned, given with --sha256, or from
the upstream's checksum file) and kept in the cache, so a second bake needs
no network. Their files are laid out under /usr with the recipe's units,
drop-ins, tmpfiles.d lines and default configs, and built exactly as
'sysext build' does, into NAME-VERSION-ARCH.raw. On any error no image is
written.

--push REF publishes the image in the same step, as 'sysext push' does:
--sign --key FILE signs what was pushed (architectures kept by --append keep
their signatures), and --append refuses to replace a signed index without
the same key unless --allow-unsigned.

A download failing or not matching its checksum, a bad recipe file, or a
failed build or push is a failure (1); an unknown recipe or option, an
architecture the recipe does not offer or a version that does not match the
recipe's pattern is a usage error (2).`,
		Example: `  sysext bake tailscale --version 1.76.6
  sysext bake kubernetes --version v1.31.2 --arch arm64 --option cni-version=v1.6.2 -o out/
  sysext bake docker --version 27.3.1 --option without=containerd --sha256 docker=HEX
  sysext bake ./myrecipe.yaml --version 1.0 --mirror http://mirror.internal/
  sysext bake nebula --version 1.9.4 --push registry.example/ext/nebula:1.9.4 --sign --key cosign.key`,
		Args: argsUsage(cobra.ExactArgs(1)),
		RunE: func(c *cobra.Command, args []string) error {
			return runBake(c.Context(), c, opts, args[0])
		},
	}
	opts.AddFlags(c)
	return c
}

// keyValues parses repeated NAME=VALUE flags.
func keyValues(flag string, list []string) (map[string]string, error) {
	out := map[string]string{}
	for _, s := range list {
		k, v, ok := strings.Cut(s, "=")
		if !ok || k == "" {
			return nil, usageError("--%s %q: use NAME=VALUE", flag, s)
		}
		if _, dup := out[k]; dup {
			return nil, usageError("--%s %s is given twice", flag, k)
		}
		out[k] = v
	}
	return out, nil
}

func runBake(ctx context.Context, c *cobra.Command, opts bakeOptions, name string) error {
	if opts.Version == "" {
		return usageError("bake needs --version (e.g. 'sysext recipes show %s' shows an example)", name)
	}
	if opts.Sign && opts.Push == "" {
		return usageError("--sign needs --push REF")
	}
	if opts.Sign && opts.Key == "" {
		return usageError("--sign needs --key FILE (make one with 'sysext generate-key-pair')")
	}
	if (opts.Append || opts.AllowUnsig) && opts.Push == "" {
		return usageError("--append and --allow-unsigned need --push REF")
	}
	if opts.AllowUnsig && !opts.Append {
		return usageError("--allow-unsigned is only used with --append")
	}
	if opts.Format != string(builder.Squashfs) && opts.Format != string(builder.EROFS) {
		return usageError("--format %q: use squashfs or erofs", opts.Format)
	}
	var arch extension.Arch
	if opts.Arch != "" {
		a, err := extension.ParseArch(opts.Arch)
		if err != nil {
			return usageError("--arch: %v", err)
		}
		arch = a
	}
	options, err := keyValues("option", opts.Options)
	if err != nil {
		return err
	}
	pins, err := keyValues("sha256", opts.SHA256)
	if err != nil {
		return err
	}
	r, err := recipe.Load(name)
	if err != nil {
		return err
	}
	var ref oci.Reference
	if opts.Push != "" {
		if ref, err = oci.ParseReference(opts.Push); err != nil {
			return usageError("--push: %v", err)
		}
	}
	var signer *verify.Signer
	if opts.Sign { // a wrong password downloads and uploads nothing
		if signer, err = loadSigner(c, opts.Key); err != nil {
			return err
		}
	}
	bo := recipe.BakeOptions{
		Recipe:      r,
		Resolve:     recipe.ResolveOptions{Version: opts.Version, Arch: arch, Options: options, SHA256: pins},
		ID:          opts.OS,
		SysextLevel: opts.SysextLevel,
		VersionID:   opts.VersionID,
		Format:      builder.ImageFormat(opts.Format),
		Compression: opts.Compression,
		Output:      opts.Output,
		Force:       opts.Force,
		Digest:      opts.Digest,
		CacheDir:    opts.Cache,
		Mirror:      opts.Mirror,
		MaxSize:     int64(opts.MaxSize),
	}
	if bo.SourceDateEpoch, _, err = sourceDateEpoch(); err != nil {
		return err
	}
	if f, ok := c.ErrOrStderr().(*os.File); ok && term.IsTerminal(int(f.Fd())) && !opts.Quiet && !opts.JSON {
		bo.Progress = f
	}
	res, err := recipe.Bake(ctx, bo)
	if err != nil {
		return err
	}
	img := res.Image
	out := c.OutOrStdout()
	pushed := ""
	if opts.Push != "" {
		if pushed, err = bakePush(ctx, opts, ref, signer, img.Path); err != nil {
			return fmt.Errorf("baked %s, but: %w", img.Path, err)
		}
	}
	if opts.JSON {
		j := struct {
			*builder.Result
			Recipe  string            `json:"recipe"`
			Version string            `json:"version"`
			Arch    string            `json:"architecture"`
			Options map[string]string `json:"options"`
			Pushed  string            `json:"pushed,omitempty"`
		}{img, r.Name, res.Plan.Version, string(res.Plan.Arch), res.Plan.Options, pushed}
		return printJSON(out, j)
	}
	if opts.Quiet {
		fmt.Fprintln(out, img.Path)
		if pushed != "" {
			fmt.Fprintln(out, pushed)
		}
		return nil
	}
	for _, w := range img.Warnings {
		fmt.Fprintf(c.ErrOrStderr(), "warning: %s\n", w)
	}
	fmt.Fprintf(out, "baked %s (%s %s, %s, %s)\n", img.Path, r.Name, res.Plan.Version, res.Plan.Arch, humanSize(img.Size))
	if len(img.Upholds) > 0 {
		fmt.Fprintf(out, "upholds: %s\n", strings.Join(img.Upholds, ", "))
	}
	if img.Digest != "" {
		fmt.Fprintf(out, "digest: %s\n", img.Digest)
	}
	if pushed != "" {
		fmt.Fprintf(out, "pushed %s\n", pushed)
	}
	return nil
}

// bakePush publishes the baked image (and signs what it pushed with
// signer, when not nil) as 'sysext push' does.
func bakePush(ctx context.Context, opts bakeOptions, ref oci.Reference, signer *verify.Signer, file string) (string, error) {
	cleanup := layoutCleanup(ref.String())
	ref, t, err := openReference(ctx, ref.String(), opts.registryFlags, true)
	if err != nil {
		cleanup()
		return "", err
	}
	res, err := publish.Push(ctx, t, ref, []string{file}, publish.Options{
		Push:          oci.PushOptions{Append: opts.Append},
		Signer:        signer,
		KeyPath:       opts.Key,
		AllowUnsigned: opts.AllowUnsig,
	})
	if res == nil {
		cleanup()
		return "", err
	}
	return ref.WithTag(ref.Tag).String() + "@" + res.Index.Digest.String(), err
}
