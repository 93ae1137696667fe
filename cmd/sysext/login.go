package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/sysext/sysext/oci"
)

func init() {
	register("login", newLoginCommand)
	register("logout", newLogoutCommand)
}

// loginOptions are the flags of `sysext login`.
type loginOptions struct {
	registryFlags
	User          string
	PasswordStdin bool
}

func newLoginCommand() *cobra.Command {
	var opts loginOptions
	c := &cobra.Command{
		Use:   "login REGISTRY -u USER --password-stdin",
		Short: "Store credentials for a registry",
		Long: `Check USER and the password read from standard input against REGISTRY
(host[:port]) and store them where docker and oras find them:
$DOCKER_CONFIG/config.json or ~/.docker/config.json, or the credential
helper configured there. Reading also consults $REGISTRY_AUTH_FILE and the
containers auth files.`,
		Args: argsUsage(cobra.ExactArgs(1)),
		RunE: func(c *cobra.Command, args []string) error {
			return runLogin(c.Context(), c, opts, args)
		},
	}
	opts.registryFlags.addFlags(c)
	c.Flags().StringVarP(&opts.User, "username", "u", "", "user `name`")
	c.Flags().BoolVar(&opts.PasswordStdin, "password-stdin", false, "read the password (or token) from standard input")
	return c
}

func runLogin(ctx context.Context, c *cobra.Command, opts loginOptions, args []string) error {
	host := args[0]
	if err := oci.ParseRegistry(host); err != nil {
		return err
	}
	if opts.User == "" {
		return usageError("login %s: give the user name with -u USER", host)
	}
	if !opts.PasswordStdin {
		return usageError("login %s: pass the password on standard input with --password-stdin (never on the command line)", host)
	}
	pw, err := readPassword(c.InOrStdin())
	if err != nil {
		return err
	}
	if err := oci.Login(ctx, host, opts.User, pw, opts.registryFlags.options()); err != nil {
		return err
	}
	_, err = fmt.Fprintf(c.OutOrStdout(), "logged in to %s as %s\n", host, opts.User)
	return err
}

func readPassword(r io.Reader) (string, error) {
	line, err := bufio.NewReader(io.LimitReader(r, 64<<10)).ReadString('\n')
	if err != nil && err != io.EOF {
		return "", fmt.Errorf("read the password from standard input: %w", err)
	}
	pw := strings.TrimRight(line, "\r\n")
	if pw == "" {
		return "", usageError("--password-stdin: standard input is empty")
	}
	return pw, nil
}

func newLogoutCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "logout REGISTRY",
		Short: "Remove stored credentials for a registry",
		Long: `Remove the credentials stored for REGISTRY (host[:port]) by 'sysext login',
'docker login' or 'oras login': from $DOCKER_CONFIG/config.json or
~/.docker/config.json, or from the credential helper configured there.
Credentials in $REGISTRY_AUTH_FILE and the containers auth files are read
but never changed; remove them with the tool that wrote them.`,
		Example: `  sysext logout ghcr.io
  sysext logout localhost:5000`,
		Args: argsUsage(cobra.ExactArgs(1)),
		RunE: func(c *cobra.Command, args []string) error {
			if err := oci.Logout(c.Context(), args[0]); err != nil {
				return err
			}
			_, err := fmt.Fprintf(c.OutOrStdout(), "logged out of %s\n", args[0])
			return err
		},
	}
}
