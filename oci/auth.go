package oci

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"oras.land/oras-go/v2/registry/remote"
	"oras.land/oras-go/v2/registry/remote/auth"
	"oras.land/oras-go/v2/registry/remote/credentials"
)

// CredentialStore returns the user's credential stores, in the order they
// are consulted: docker's config.json ($DOCKER_CONFIG/config.json or
// ~/.docker/config.json, with its credential helpers), then
// $REGISTRY_AUTH_FILE, then the containers auth files
// ($XDG_RUNTIME_DIR/containers/auth.json, ~/.config/containers/auth.json).
// Login writes to the first one.
func CredentialStore() (credentials.Store, error) {
	primary, err := credentials.NewStoreFromDocker(credentials.StoreOptions{AllowPlaintextPut: true})
	if err != nil {
		return nil, fmt.Errorf("docker credential store: %w", err)
	}
	var fallbacks []credentials.Store
	var paths []string
	if p := os.Getenv("REGISTRY_AUTH_FILE"); p != "" {
		paths = append(paths, p)
	}
	if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" {
		paths = append(paths, filepath.Join(d, "containers", "auth.json"))
	}
	if h, err := os.UserHomeDir(); err == nil {
		paths = append(paths, filepath.Join(h, ".config", "containers", "auth.json"))
	}
	for _, p := range paths {
		if _, err := os.Stat(p); err != nil {
			continue
		}
		s, err := credentials.NewStore(p, credentials.StoreOptions{})
		if err != nil {
			return nil, fmt.Errorf("credential file %s: %w", p, err)
		}
		fallbacks = append(fallbacks, s)
	}
	return credentials.NewStoreWithFallbacks(primary, fallbacks...), nil
}

// Login checks user/password against the registry host[:port] and stores
// them in the user's credential store (docker's config.json or its
// credential helper).
func Login(ctx context.Context, host, user, password string, opts Options) error {
	if err := ParseRegistry(host); err != nil {
		return err
	}
	if user == "" || password == "" {
		return errors.New("login: a user name (-u) and a password (--password-stdin) are required")
	}
	reg, err := remote.NewRegistry(host)
	if err != nil {
		return fmt.Errorf("login %s: %w", host, err)
	}
	reg.PlainHTTP = opts.PlainHTTP || IsLoopbackHost(host)
	o := opts
	o.Credentials = nil
	reg.Client = newAuthClient(o)
	store, err := CredentialStore()
	if err != nil {
		return err
	}
	if err := credentials.Login(ctx, store, reg, auth.Credential{Username: user, Password: password}); err != nil {
		return fmt.Errorf("login %s: %w", host, err)
	}
	return nil
}

// Logout removes the stored credentials of host[:port].
func Logout(ctx context.Context, host string) error {
	if err := ParseRegistry(host); err != nil {
		return err
	}
	store, err := CredentialStore()
	if err != nil {
		return err
	}
	if err := credentials.Logout(ctx, store, host); err != nil {
		return fmt.Errorf("logout %s: %w", host, err)
	}
	return nil
}
