package ocitest

import (
	"context"

	"oras.land/oras-go/v2/registry/remote/auth"
)

// noCredentials keeps tests away from the user's credential stores.
func noCredentials(context.Context, string) (auth.Credential, error) {
	return auth.EmptyCredential, nil
}
