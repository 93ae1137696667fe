package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/sysext/sysext/recipe"
)

func init() { register("recipes", newRecipesCommand) }

// recipesOptions are the flags of `sysext recipes list|show`.
type recipesOptions struct {
	JSON bool
}

func newRecipesCommand() *cobra.Command {
	var opts recipesOptions
	c := &cobra.Command{
		Use:   "recipes",
		Short: "List and show the built-in recipes that 'sysext bake' turns into extensions",
		Long: `Recipes say where an upstream release is downloaded for each architecture,
how each download is checked, and which files, units and default configs
the extension ships. The catalog is built into sysext; 'sysext bake FILE'
takes your own recipe file (docs/recipes.md describes the format).`,
		Args: argsUsage(cobra.NoArgs),
	}
	list := &cobra.Command{
		Use:   "list [--json]",
		Short: "List the built-in recipes",
		Args:  argsUsage(cobra.NoArgs),
		RunE: func(c *cobra.Command, _ []string) error {
			return runRecipesList(c.Context(), c.OutOrStdout(), opts)
		},
	}
	list.Flags().BoolVar(&opts.JSON, "json", false, "print JSON")
	show := &cobra.Command{
		Use:   "show NAME|FILE",
		Short: "Print a recipe (its YAML) with the versions, architectures and options it takes",
		Args:  argsUsage(cobra.ExactArgs(1)),
		RunE: func(c *cobra.Command, args []string) error {
			return runRecipesShow(c.Context(), c.OutOrStdout(), args[0])
		},
	}
	c.AddCommand(list, show)
	return c
}

type recipeJSON struct {
	Name        string         `json:"name"`
	Description string         `json:"description"`
	Upstream    string         `json:"upstream"`
	Arches      []string       `json:"architectures"`
	Version     string         `json:"version_pattern"`
	Example     string         `json:"version_example,omitempty"`
	Options     []recipeOption `json:"options"`
	Units       []string       `json:"units"`
	Enabled     []string       `json:"enabled"`
}

type recipeOption struct {
	Name        string   `json:"name"`
	Description string   `json:"description,omitempty"`
	Default     string   `json:"default"`
	Values      []string `json:"values,omitempty"`
}

func describeRecipe(r *recipe.Recipe) recipeJSON {
	j := recipeJSON{Name: r.Name, Description: r.Description, Upstream: r.Upstream, Version: r.Version.Pattern, Example: r.Version.Example,
		Arches: []string{}, Options: []recipeOption{}, Units: []string{}, Enabled: []string{}}
	for _, a := range r.ArchList() {
		j.Arches = append(j.Arches, string(a))
	}
	for _, o := range r.Options {
		j.Options = append(j.Options, recipeOption{o.Name, o.Description, o.Default, o.Values})
	}
	for _, u := range r.Units {
		j.Units = append(j.Units, u.Name)
		if u.Enable {
			j.Enabled = append(j.Enabled, u.Name)
		}
	}
	return j
}

func runRecipesList(_ context.Context, w io.Writer, opts recipesOptions) error {
	all, err := recipe.Catalog()
	if err != nil {
		return err
	}
	if opts.JSON {
		out := make([]recipeJSON, 0, len(all))
		for _, r := range all {
			out = append(out, describeRecipe(r))
		}
		return printJSON(w, out)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tARCHITECTURES\tEXAMPLE VERSION\tDESCRIPTION")
	for _, r := range all {
		j := describeRecipe(r)
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", r.Name, strings.Join(j.Arches, ","), r.Version.Example, r.Description)
	}
	return tw.Flush()
}

func runRecipesShow(_ context.Context, w io.Writer, name string) error {
	r, err := recipe.Load(name)
	if err != nil {
		return err
	}
	j := describeRecipe(r)
	fmt.Fprintf(w, "# %s: %s\n# from %s\n# bake: sysext bake %s --version %s [--arch %s]\n", r.Name, r.Description, r.Source(), name, r.Version.Example, strings.Join(j.Arches, "|"))
	for _, o := range r.Options {
		fmt.Fprintf(w, "# option %s (default %q): %s\n", o.Name, o.Default, o.Description)
	}
	_, err = w.Write(r.Raw())
	return err
}
