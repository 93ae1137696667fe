// Package verity reads and checks what makes a signed dm-verity extension
// image: the hash tree veritysetup writes (superblock, levels, root hash),
// systemd's signature partition (JSON with rootHash,
// certificateFingerprint and a PKCS#7 signature) and the X.509
// certificates that sign it.
//
// It is the one place these formats are parsed and the one place a verity
// signature is made or checked; builder signs with it, fsimage and verify
// read and check with it. The PKCS#7 code is github.com/digitorus/pkcs7,
// already in the dependency tree through sigstore (see
// docs/dependencies.md); nothing here imports sigstore, so builder may use
// it.
//
// Invariants: every input is untrusted and bounded (superblock fields,
// JSON size, PKCS#7 size, tree geometry against the partition sizes);
// reading a tree keeps memory constant whatever the image's size; a
// signature counts only when it verifies over the hex root hash with a
// certificate the caller trusts, matched by its SHA-256 fingerprint.
//
// It does not activate anything: enforcement at read time is the kernel's
// (dm-verity), and whether a certificate is trusted is the caller's
// decision (verify's trust policy, /etc/verity.d for systemd).
package verity
