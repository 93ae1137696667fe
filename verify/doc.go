// Package verify checks cosign-compatible signatures on OCI manifests
// against a trust policy, and signs. It is the only importer of sigstore.
// Its result, Verified, is the only way to tell the node store that a
// manifest digest may be installed.
package verify
