// Package verify signs OCI manifests the way cosign does and checks
// cosign-compatible signatures against a trust policy. It is the only
// importer of sigstore.
//
// Formats: it writes cosign's simple-signing signature manifest under the
// sha256-<hex>.sig tag, which cosign v2 and v3 verify; it reads that format
// and cosign v3's Sigstore bundles (v0.3, DSSE) attached as OCI referrers
// or under the sha256-<hex> fallback tag. All cryptography, certificate and
// transparency-log checking is sigstore-go's; this package decides what to
// feed it and what the result means.
//
// Invariants: its result, Verified, can only be made here and names one
// manifest digest, so the node store cannot install an unverified or a
// different manifest by mistake. A signature counts only after its
// cryptography verified and it was shown to cover that digest. Untrusted
// signature data is size-limited before it is read and digest-checked as it
// is read. Nothing here reaches the network except through the Source the
// caller passes: no TUF, Rekor or Fulcio requests (keyless verification
// takes a trusted root file).
//
// A "veritySigned" requirement (verity.go) carries on to the image: the
// Verified value names the certificates whose signature over a disk
// image's dm-verity root hash the node must find after the download.
//
// Freshness is opt-in: a valid signature on an old manifest is still
// valid unless the policy's "freshness" asks the payload to name the tag
// and a recent signing time (Freshness; Signer.WithFreshness writes them).
// Refusing lower versions is the node's job (extension.CompareVersions).
package verify
