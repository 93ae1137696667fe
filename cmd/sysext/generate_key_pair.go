package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/sysext/sysext/atomicfile"
	"github.com/sysext/sysext/internal/smallfile"
	"github.com/sysext/sysext/verify"
	"github.com/sysext/sysext/verity"
)

func init() { register("generate-key-pair", newGenerateKeyPairCommand) }

// generateKeyPairOptions are the flags of `sysext generate-key-pair`.
type generateKeyPairOptions struct {
	Prefix  string
	X509    bool
	Subject string
	Days    int
}

func newGenerateKeyPairCommand() *cobra.Command {
	var opts generateKeyPairOptions
	c := &cobra.Command{
		Use:   "generate-key-pair",
		Short: "Make a signing key pair: cosign's (cosign.key, cosign.pub), or with --x509 a verity signing key and certificate",
		Long: `Make an ECDSA P-256 key pair in cosign's formats: PREFIX.key, the private
key encrypted with a password (scrypt and secretbox, PEM "ENCRYPTED SIGSTORE
PRIVATE KEY"), and PREFIX.pub, the public key. cosign reads these files and
sysext reads the ones 'cosign generate-key-pair' makes.

The password comes from $COSIGN_PASSWORD (which may be set to an empty
string), or is asked for twice on a terminal. Existing files are never
overwritten.

With --x509: the key that signs disk images' verity root hashes ('build
--format ddi --sign-key'), PREFIX.key, an RSA 3072 private key in
unencrypted PEM (PKCS#8, mode 0600, as systemd-repart and openssl read it:
keep it where your CI keeps secrets), and PREFIX.crt, its self-signed X.509
certificate (subject CN=--subject, valid --days). The certificate is what
nodes trust: name it in the trust policy (docs/signatures.md); sysext
installs it in /etc/verity.d for systemd. PREFIX defaults to "verity".
`,
		Args: argsUsage(cobra.NoArgs),
		RunE: func(c *cobra.Command, args []string) error {
			return runGenerateKeyPair(c.Context(), c, opts)
		},
	}
	c.Flags().StringVar(&opts.Prefix, "output-key-prefix", "", "write `PREFIX`.key and PREFIX.pub (PREFIX.crt with --x509) (default \"cosign\", \"verity\" with --x509)")
	c.Flags().BoolVar(&opts.X509, "x509", false, "make a verity signing key and its X.509 certificate instead of a cosign key pair")
	c.Flags().StringVar(&opts.Subject, "subject", "", "with --x509: the certificate's common name (default: \"sysext verity signing key\")")
	c.Flags().IntVar(&opts.Days, "days", 3650, "with --x509: how many days the certificate is valid")
	return c
}

func runGenerateKeyPair(ctx context.Context, c *cobra.Command, opts generateKeyPairOptions) error {
	if opts.X509 {
		return runGenerateX509(ctx, c, opts)
	}
	if opts.Subject != "" || c.Flags().Changed("days") {
		return usageError("--subject and --days are for --x509")
	}
	if opts.Prefix == "" {
		opts.Prefix = "cosign"
		if c.Flags().Changed("output-key-prefix") {
			return usageError("--output-key-prefix must not be empty")
		}
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

// runGenerateX509 writes a verity signing key and its self-signed
// certificate.
func runGenerateX509(ctx context.Context, c *cobra.Command, opts generateKeyPairOptions) error {
	if opts.Prefix == "" {
		if c.Flags().Changed("output-key-prefix") {
			return usageError("--output-key-prefix must not be empty")
		}
		opts.Prefix = "verity"
	}
	if opts.Subject == "" {
		opts.Subject = "sysext verity signing key"
	}
	if opts.Days < 1 || opts.Days > 100*365 {
		return usageError("--days %d: give 1 to 36500", opts.Days)
	}
	keyPath, certPath := opts.Prefix+".key", opts.Prefix+".crt"
	for _, p := range []string{keyPath, certPath} {
		if _, err := os.Lstat(p); err == nil {
			return fmt.Errorf("%s already exists: remove it or choose another --output-key-prefix", p)
		}
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	key, cert, err := verity.GenerateCertificate(opts.Subject, time.Duration(opts.Days)*24*time.Hour, time.Now())
	if err != nil {
		return usageError("--subject: %v", err)
	}
	if err := writeNew(keyPath, key, 0o600); err != nil {
		return err
	}
	if err := writeNew(certPath, cert, 0o644); err != nil {
		_ = os.Remove(keyPath)
		return err
	}
	fmt.Fprintf(c.OutOrStdout(), "Private key written to %s (unencrypted: keep it secret)\nCertificate written to %s\n", keyPath, certPath)
	return nil
}
