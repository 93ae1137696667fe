package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/sysext/sysext/atomicfile"
	"github.com/sysext/sysext/internal/smallfile"
	"github.com/sysext/sysext/verify"
)

func init() { register(newGenerateKeyPairCommand) }

// generateKeyPairOptions are the flags of `sysext generate-key-pair`.
type generateKeyPairOptions struct {
	Prefix string
}

func newGenerateKeyPairCommand() *cobra.Command {
	var opts generateKeyPairOptions
	c := &cobra.Command{
		Use:   "generate-key-pair",
		Short: "Make a signing key pair (cosign.key, cosign.pub) that cosign also uses",
		Long: `Make an ECDSA P-256 key pair in cosign's formats: PREFIX.key, the private
key encrypted with a password (scrypt and secretbox, PEM "ENCRYPTED SIGSTORE
PRIVATE KEY"), and PREFIX.pub, the public key. cosign reads these files and
sysext reads the ones 'cosign generate-key-pair' makes.

The password comes from $COSIGN_PASSWORD (which may be set to an empty
string), or is asked for twice on a terminal. Existing files are never
overwritten.`,
		Args: argsUsage(cobra.NoArgs),
		RunE: func(c *cobra.Command, args []string) error {
			return runGenerateKeyPair(c.Context(), c, opts)
		},
	}
	c.Flags().StringVar(&opts.Prefix, "output-key-prefix", "cosign", "write `PREFIX`.key and PREFIX.pub")
	return c
}

func runGenerateKeyPair(ctx context.Context, c *cobra.Command, opts generateKeyPairOptions) error {
	if opts.Prefix == "" {
		return usageError("--output-key-prefix must not be empty")
	}
	keyPath, pubPath := opts.Prefix+".key", opts.Prefix+".pub"
	for _, p := range []string{keyPath, pubPath} {
		if _, err := os.Lstat(p); err == nil {
			return fmt.Errorf("%s already exists: remove it or choose another --output-key-prefix", p)
		}
	}
	pw, err := readKeyPassword(c, true)
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	priv, pub, err := verify.GenerateKeyPair(pw)
	if err != nil {
		return err
	}
	if err := writeNew(keyPath, priv, 0o600); err != nil {
		return err
	}
	if err := writeNew(pubPath, pub, 0o644); err != nil {
		_ = os.Remove(keyPath) // nothing half-done: no key without its public half
		return err
	}
	fmt.Fprintf(c.OutOrStdout(), "Private key written to %s\nPublic key written to %s\n", keyPath, pubPath)
	return nil
}

// writeNew writes a file that must not exist yet, atomically.
func writeNew(path string, data []byte, perm os.FileMode) error {
	f, err := atomicfile.Create(path, perm)
	if err != nil {
		return err
	}
	defer f.Abort()
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return f.Commit(false)
}

// readKeyPassword returns the private key password: $COSIGN_PASSWORD when it
// is set (even empty), else asked on the terminal (twice when confirm).
func readKeyPassword(c *cobra.Command, confirm bool) ([]byte, error) {
	if pw, ok := os.LookupEnv("COSIGN_PASSWORD"); ok {
		return []byte(pw), nil
	}
	in, ok := c.InOrStdin().(*os.File)
	if !ok || !term.IsTerminal(int(in.Fd())) {
		return nil, errors.New("no password: set COSIGN_PASSWORD (it may be empty) or run on a terminal")
	}
	ask := func(prompt string) ([]byte, error) {
		fmt.Fprint(c.ErrOrStderr(), prompt)
		b, err := term.ReadPassword(int(in.Fd()))
		fmt.Fprintln(c.ErrOrStderr())
		if err != nil {
			return nil, fmt.Errorf("read password: %w", err)
		}
		return b, nil
	}
	pw, err := ask("Enter password for private key: ")
	if err != nil || !confirm {
		return pw, err
	}
	again, err := ask("Enter password for private key again: ")
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(pw, again) {
		return nil, errors.New("passwords do not match")
	}
	return pw, nil
}

// loadSigner reads and decrypts a private key file.
func loadSigner(c *cobra.Command, path string) (*verify.Signer, error) {
	b, err := smallfile.Read(path, 64<<10)
	var big *smallfile.TooLargeError
	if errors.As(err, &big) {
		return nil, fmt.Errorf("--key: %w: not a key file", err)
	}
	if err != nil {
		return nil, fmt.Errorf("--key: %w", err)
	}
	pw, err := readKeyPassword(c, false)
	if err != nil {
		return nil, err
	}
	s, err := verify.LoadPrivateKey(b, pw)
	if err != nil {
		return nil, fmt.Errorf("--key %s: %w", path, err)
	}
	return s, nil
}
