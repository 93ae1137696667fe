package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/sysext/sysext/builder"
	"github.com/sysext/sysext/extension"
)

func init() { register("build", newBuildCommand) }

// buildOptions are the flags of `sysext build` shared by every source of
// the tree (a directory, or --from-image in build_from_image.go).
type buildOptions struct {
	Name        string
	Version     string
	Arch        string
	OS          string
	SysextLevel string
	VersionID   string
	Scope       string
	Format      string
	Compression string
	Enable      []string
	Output      string
	Force       bool
	Digest      bool
	JSON        bool
	// KeepPrivileges: files that keep set-user-ID/set-group-ID bits and
	// file capabilities (paths in the extension; in ROOTFS for flix and
	// flatwrap).
	KeepPrivileges []string
	Quiet          bool

	// Disk images (--format ddi), flags of build only.
	FS          string
	SignKey     string
	Certificate string
}

// fromImageOptions are the flags that build from a container image instead
// of a directory; build_from_image.go passes them to fromimage.Build.
type fromImageOptions struct {
	Image           string   // --from-image REF
	Base            string   // --base REF: drop what this image already has
	Keep            []string // --keep PATH (repeatable)
	IgnoreDeletions bool     // --ignore-deletions
	Confext         string   // --confext FILE
	Platform        string   // --platform os/arch[/variant]
	MaxSize         sizeFlag // --max-size SIZE
}

func (o *buildOptions) AddFlags(c *cobra.Command) {
	f := c.Flags()
	f.StringVar(&o.Name, "name", "", "extension name (the NAME in extension-release.NAME); required")
	o.addImageFlags(c,
		"architecture in systemd's naming (x86-64, arm64, ...), an OCI or uname name, or _any (default: the host's)",
		"compression, ALG or ALG:LEVEL (squashfs: gzip, xz, lzo, lz4, zstd, none; erofs: lz4, lz4hc, lzma, deflate, zstd, none; default zstd / lz4hc; lzma/deflate/zstd EROFS need Linux 5.16/6.6/6.10 on the nodes)")
	f.StringVar(&o.Scope, "scope", "", `SYSEXT_SCOPE: "system", "initrd", "portable" or several, space-separated (default: unset, meaning system portable)`)
	f.StringArrayVar(&o.Enable, "enable", nil, "start this unit (under usr/lib/systemd/system/ in the tree) while the extension is merged, via an Upholds= drop-in; repeatable")
	f.StringVar(&o.FS, "fs", "", "with --format ddi: the root partition's filesystem, erofs (default) or squashfs")
	f.StringVar(&o.SignKey, "sign-key", "", "with --format ddi: sign the verity root hash with this PEM private key (as 'generate-key-pair --x509' makes)")
	f.StringVar(&o.Certificate, "certificate", "", "with --format ddi and --sign-key: the key's X.509 certificate (PEM)")
}

// addImageFlags adds the flags of every command that writes an image (build,
// flix, flatwrap); only the help of --arch and --compression differs.
func (o *buildOptions) addImageFlags(c *cobra.Command, archHelp, compressionHelp string) {
	f := c.Flags()
	f.StringVar(&o.Version, "version", "", "extension version (SYSEXT_VERSION_ID); required")
	f.StringVar(&o.Arch, "arch", "", archHelp)
	f.StringVar(&o.OS, "os", extension.AnyID, "ID of the OS the extension is for, or _any")
	f.StringVar(&o.SysextLevel, "sysext-level", "", "SYSEXT_LEVEL the host must have (with --os)")
	f.StringVar(&o.VersionID, "version-id", "", "VERSION_ID the host must have (with --os, when it has no SYSEXT_LEVEL)")
	f.StringVar(&o.Format, "format", string(builder.Squashfs), "image format: squashfs, erofs, or ddi (a disk image with a dm-verity protected root partition)")
	f.StringVar(&o.Compression, "compression", "", compressionHelp)
	f.StringVarP(&o.Output, "output", "o", "", "output file, or directory for NAME-VERSION-ARCH.raw (default: the current directory)")
	f.BoolVar(&o.Force, "force", false, "replace an existing output file")
	f.BoolVar(&o.Digest, "digest", false, "also hash the image and print its sha256 digest (one more read of it; push and inspect hash it anyway)")
	f.BoolVar(&o.JSON, "json", false, "print the result as JSON")
	f.StringArrayVar(&o.KeepPrivileges, "keep-privileges", nil, "keep the set-user-ID/set-group-ID bits and file capabilities of this file, `PATH` in the extension (every other file loses them: the image is all-root); repeatable")
	f.BoolVarP(&o.Quiet, "quiet", "q", false, "print only the image's path (warnings still go to stderr)")
}

func (o *fromImageOptions) AddFlags(c *cobra.Command) {
	f := c.Flags()
	f.StringVar(&o.Image, "from-image", "", "build from the root filesystem of this container image (REF) instead of a directory")
	f.StringVar(&o.Base, "base", "", "with --from-image: leave out what this base image (REF) already has")
	f.StringArrayVar(&o.Keep, "keep", nil, "with --from-image: keep only this path of the image (repeatable)")
	f.BoolVar(&o.IgnoreDeletions, "ignore-deletions", false, "with --from-image --base: ignore files the image deletes from its base")
	f.StringVar(&o.Confext, "confext", "", "with --from-image: also write the image's /etc as a configuration extension to FILE")
	f.StringVar(&o.Platform, "platform", "", "with --from-image: the platform to pick from a multi-platform image (os/arch[/variant])")
	addMaxSizeFlag(c, &o.MaxSize, "with --from-image: images whose layers")
}

func newBuildCommand() *cobra.Command {
	var opts buildOptions
	var img fromImageOptions
	c := &cobra.Command{
		Use:   "build TREE --name NAME --version VERSION [flags]",
		Short: "Build a systemd-sysext image from a directory tree",
		Long: `Build a system extension image (squashfs or EROFS) from TREE, a directory
with usr/ (and optionally opt/), the only places systemd-sysext merges.

Files lose set-user-ID/set-group-ID bits and file capabilities unless
named with --keep-privileges (the image is owned by root, so they would
grant root's privileges on every host), and device nodes are refused.

The image gets usr/lib/extension-release.d/extension-release.NAME (ID,
ARCHITECTURE, SYSEXT_LEVEL or VERSION_ID, SYSEXT_VERSION_ID, ...) and, for
each --enable UNIT, an Upholds= drop-in that starts the unit while the
extension is merged. TREE itself is never modified. The output,
NAME-VERSION-ARCH.raw, is byte-for-byte reproducible: the same tree and
SOURCE_DATE_EPOCH (default 0) give the same image.

With --format ddi the image is a Discoverable Disk Image: a GPT disk with
the root partition (the tree as --fs erofs or squashfs), its dm-verity hash
partition and, with --sign-key and --certificate, the signature partition
that systemd and the kernel check at every merge. systemd-repart builds it
where this host's is 257 or newer; elsewhere veritysetup (cryptsetup-bin)
makes the hash tree and sysext the partition table. See docs/building.md.

Needs mksquashfs (squashfs-tools) or mkfs.erofs (erofs-utils).

A bad tree, a tool failing or the output existing without --force is a
failure (1); a bad flag value is a usage error (2).`,
		Example: `  sysext build ./root --name hello --version 1.0
  sysext build ./root --name docker --version 24.0.9 --arch arm64 --format erofs \
      --enable docker.socket --enable docker.service -o out/
  sysext build ./root --name tool --version 2 --os flatcar --sysext-level 1.0
  sysext build ./root --name tool --version 2 --arch x86-64 --format ddi \
      --sign-key verity.key --certificate verity.crt`,
		Args: argsUsage(func(c *cobra.Command, args []string) error {
			if img.Image != "" {
				return cobra.NoArgs(c, args)
			}
			return cobra.ExactArgs(1)(c, args)
		}),
		RunE: func(c *cobra.Command, args []string) error {
			if img.Image != "" {
				return runBuildFromImage(c, opts, img)
			}
			if img.Base != "" || len(img.Keep) > 0 || img.IgnoreDeletions || img.Confext != "" || img.Platform != "" || img.MaxSize != 0 {
				return usageError("--base, --keep, --ignore-deletions, --confext, --platform and --max-size need --from-image")
			}
			return runBuild(c, opts, args[0])
		},
	}
	opts.AddFlags(c)
	img.AddFlags(c)
	return c
}

// builderOptions checks the flags and turns them into builder.Options for
// tree. Bad values are usage errors (exit 2).
func (o buildOptions) builderOptions(tree string) (builder.Options, error) {
	if o.Name == "" {
		return builder.Options{}, usageError("--name is required: the extension's name, as in extension-release.NAME")
	}
	if err := extension.ValidateName(o.Name); err != nil {
		return builder.Options{}, usageError("--name: %v", err)
	}
	if o.Version == "" {
		return builder.Options{}, usageError("--version is required: the extension's version")
	}
	if err := extension.ValidateVersion(o.Version); err != nil {
		return builder.Options{}, usageError("--version: %v", err)
	}
	arch := extension.HostArch()
	if o.Arch != "" {
		a, err := extension.ParseArch(o.Arch)
		if err != nil {
			return builder.Options{}, usageError("--arch: %v", err)
		}
		arch = a
	}
	var scopes []extension.Scope
	if o.Scope != "" {
		s, err := extension.ParseScopes(o.Scope)
		if err != nil {
			return builder.Options{}, usageError("--scope: %v", err)
		}
		scopes = s
	}
	format := builder.ImageFormat(o.Format)
	if format != builder.Squashfs && format != builder.EROFS && format != builder.DDI {
		return builder.Options{}, usageError("--format %s: use squashfs, erofs or ddi", o.Format)
	}
	if format != builder.DDI && (o.FS != "" || o.SignKey != "" || o.Certificate != "") {
		return builder.Options{}, usageError("--fs, --sign-key and --certificate are for --format ddi")
	}
	if (o.SignKey == "") != (o.Certificate == "") {
		return builder.Options{}, usageError("--sign-key and --certificate go together: the key signs the root hash, the certificate names it")
	}
	if o.FS != "" && o.FS != string(builder.EROFS) && o.FS != string(builder.Squashfs) {
		return builder.Options{}, usageError("--fs %s: use erofs or squashfs", o.FS)
	}
	epoch, _, err := sourceDateEpoch()
	if err != nil {
		return builder.Options{}, err
	}
	meta := extension.Metadata{
		Name: o.Name, Version: o.Version, Arch: arch, ID: o.OS,
		VersionID: o.VersionID, SysextLevel: o.SysextLevel, Scopes: scopes,
		ReloadManager: len(o.Enable) > 0,
	}
	if err := meta.Validate(); err != nil {
		return builder.Options{}, usageError("%v", err)
	}
	if meta.ID != extension.AnyID && meta.VersionID == "" && meta.SysextLevel == "" {
		return builder.Options{}, usageError("--os %s also needs --sysext-level or --version-id (or use --os _any)", meta.ID)
	}
	bo := builder.Options{
		Tree: tree, Meta: meta, Format: format, Compression: o.Compression,
		Enable: o.Enable, Output: o.Output, Force: o.Force, SourceDateEpoch: epoch, Digest: o.Digest,
		KeepPrivileges: o.KeepPrivileges,
		Filesystem:     builder.ImageFormat(o.FS), SignKey: o.SignKey, Certificate: o.Certificate,
	}
	// The builder's own checks (compression, a level without --os), before
	// any tree is read or image downloaded.
	if err := builder.CheckOptions(bo); err != nil {
		return builder.Options{}, err
	}
	return bo, nil
}

// runBuild builds TREE and prints the image's description.
func runBuild(c *cobra.Command, o buildOptions, tree string) error {
	bo, err := o.builderOptions(tree)
	if err != nil {
		return err
	}
	progressTo(c, o, &bo)
	res, err := builder.Build(c.Context(), bo)
	if err != nil {
		return err
	}
	return printBuilt(c, o, res)
}

// progressTo shows the tools' progress only on a terminal; scripts get
// quiet output.
func progressTo(c *cobra.Command, o buildOptions, bo *builder.Options) {
	if !o.JSON && !o.Quiet && term.IsTerminal(int(os.Stderr.Fd())) {
		bo.Progress = c.ErrOrStderr()
	}
}

// printBuilt prints a built image's warnings and description (as JSON with
// --json); build, flix and flatwrap share it.
func printBuilt(c *cobra.Command, o buildOptions, res *builder.Result) error {
	for _, w := range res.Warnings {
		fmt.Fprintf(c.ErrOrStderr(), "sysext: warning: %s\n", w)
	}
	j := newImageJSON(res.Path, string(res.Format), res.Size, res.Digest, res.Meta, res.Release, res.Upholds)
	if res.Format == builder.EROFS {
		j.Compression = erofsCompression(res.Compression)
	}
	if res.Format == builder.DDI {
		j.Format = "gpt"
		j.DDI = builtDDIJSON(res)
	}
	if o.JSON {
		j.Warnings = res.Warnings
		return printJSON(c.OutOrStdout(), j)
	}
	if o.Quiet {
		_, err := fmt.Fprintln(c.OutOrStdout(), res.Path)
		return err
	}
	fmt.Fprintf(c.OutOrStdout(), "built %s\n", res.Path)
	return printImage(c.OutOrStdout(), j)
}
