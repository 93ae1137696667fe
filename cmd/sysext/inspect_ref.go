package main

import (
	"fmt"

	"github.com/spf13/cobra"
)

func runInspectRef(c *cobra.Command, opts inspectOptions, ref string) error {
	return fmt.Errorf("%s: no such file, and inspecting a registry reference is not implemented yet", ref)
}
