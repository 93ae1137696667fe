package main

import (
	"context"
	"slices"
	"sort"

	"github.com/spf13/cobra"

	"github.com/sysext/sysext/builder"
	"github.com/sysext/sysext/extension"
	"github.com/sysext/sysext/node"
	"github.com/sysext/sysext/recipe"
	"github.com/sysext/sysext/store"
)

// registerCompletions teaches the shells the values, not only the flags:
// by flag name wherever a command has it (--format, --arch, --compression,
// --platform, --variant, ...), and by command for the arguments: recipe
// names for bake, installed extensions for update, rollback and remove
// (from the store under --root), declared ones for sync. cobra's own
// 'sysext completion bash|zsh|fish' scripts ask 'sysext __complete'.
func registerCompletions(c *cobra.Command) {
	archs := []string{}
	for _, a := range extension.Architectures() {
		archs = append(archs, string(a))
	}
	byFlag := map[string]cobra.CompletionFunc{
		"format":      fixed(string(builder.Squashfs), string(builder.EROFS)),
		"arch":        fixed(append(archs, string(extension.AnyArch))...),
		"platform":    fixed(archs...),
		"compression": completeCompression,
		"variant":     fixed("flatcar", "fcos"),
		"etc":         fixed("host", "chroot"),
		"var":         fixed("host", "chroot"),
		"home":        fixed("host", "chroot"),
	}
	var walk func(*cobra.Command)
	walk = func(c *cobra.Command) {
		for name, fn := range byFlag {
			if c.Flags().Lookup(name) != nil {
				_ = c.RegisterFlagCompletionFunc(name, fn)
			}
		}
		switch c.CommandPath() {
		case "sysext bake", "sysext recipes show":
			c.ValidArgsFunction = firstArg(completeRecipes)
		case "sysext rollback", "sysext remove":
			c.ValidArgsFunction = firstArg(completeInstalled)
		case "sysext update":
			c.ValidArgsFunction = completeInstalled
		case "sysext sync":
			c.ValidArgsFunction = completeDeclared
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(c)
}

// fixed completes one of values, and no file names.
func fixed(values ...string) cobra.CompletionFunc {
	return func(*cobra.Command, []string, string) ([]cobra.Completion, cobra.ShellCompDirective) {
		return values, cobra.ShellCompDirectiveNoFileComp
	}
}

// firstArg completes only the first positional argument.
func firstArg(fn cobra.CompletionFunc) cobra.CompletionFunc {
	return func(c *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
		if len(args) > 0 {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		return fn(c, args, toComplete)
	}
}

// completeCompression offers the algorithms of the --format given so far
// (squashfs by default).
func completeCompression(c *cobra.Command, _ []string, _ string) ([]cobra.Completion, cobra.ShellCompDirective) {
	format := string(builder.Squashfs)
	if f := c.Flags().Lookup("format"); f != nil && f.Value.String() != "" {
		format = f.Value.String()
	}
	return builder.Compressions(builder.ImageFormat(format)), cobra.ShellCompDirectiveNoFileComp
}

// completeRecipes offers the catalog's recipe names; a recipe file is a
// path, so file names are completed too.
func completeRecipes(*cobra.Command, []string, string) ([]cobra.Completion, cobra.ShellCompDirective) {
	all, err := recipe.Catalog()
	if err != nil {
		return nil, cobra.ShellCompDirectiveError
	}
	var out []string
	for _, r := range all {
		out = append(out, r.Name+"\t"+r.Description)
	}
	return out, cobra.ShellCompDirectiveDefault
}

// completionStore is what the store flags given so far on the command
// line say (--root, --extensions-dir, --per-deployment).
func completionStore(c *cobra.Command) (store.Options, bool) {
	var f nodeFlags
	f.Root, _ = c.Flags().GetString("root")
	f.ExtensionsDir, _ = c.Flags().GetString("extensions-dir")
	f.PerDeployment, _ = c.Flags().GetBool("per-deployment")
	so, err := f.storeOptions(false)
	return so, err == nil
}

// completeInstalled offers the extensions installed under --root, read
// from the state without the lock and without writing anything; names
// already on the command line are left out.
func completeInstalled(c *cobra.Command, args []string, _ string) ([]cobra.Completion, cobra.ShellCompDirective) {
	so, ok := completionStore(c)
	if !ok {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	so.ReadOnly = true
	s, err := store.Open(context.Background(), so)
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	defer s.Close()
	st := s.State()
	var out []string
	for _, name := range st.Names() {
		e := st.Extensions[name]
		if !slices.Contains(args, name) {
			out = append(out, name+"\t"+e.Active.Version)
		}
	}
	return out, cobra.ShellCompDirectiveNoFileComp
}

// completeDeclared offers the names declared in extensions.d under --root.
func completeDeclared(c *cobra.Command, args []string, _ string) ([]cobra.Completion, cobra.ShellCompDirective) {
	so, ok := completionStore(c)
	if !ok {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	decl, err := node.ReadDeclared(so.Root)
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	var out []string
	for _, d := range decl {
		if !slices.Contains(args, d.Name) {
			out = append(out, d.Name+"\t"+d.Source)
		}
	}
	sort.Strings(out)
	return out, cobra.ShellCompDirectiveNoFileComp
}
