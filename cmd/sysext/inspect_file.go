package main

import (
	"errors"

	"github.com/spf13/cobra"
)

func runInspectFile(c *cobra.Command, opts inspectOptions, path string) error {
	return errors.New("inspect FILE: not implemented yet")
}
