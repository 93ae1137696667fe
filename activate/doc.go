// Package activate makes activating an extension safe: a preflight that
// refuses what would break the host's merge before anything is touched
// (including a disk image the kernel cannot set up dm-verity for), a
// proof that systemd-sysext really merged the installed image after a
// refresh, a driver that rolls back by itself when the proof fails, and
// systemd-sysext's own view of what is merged.
//
// # Preflight
//
// Gather reads the facts of a system (its kernel's overlayfs and squashfs
// or EROFS support, how deep /usr is already stacked, the systemd version
// of the root from its libsystemd-shared-NNN.so, without running anything
// from it); Preflight judges images against those facts and returns a
// Report of refusals and warnings, each with the way out. Check is both in
// one call. Preflight is pure, and every path Gather reads can be pointed
// at a test file (System).
//
// # Proof
//
// An Expect says what the merged /usr must show for an extension: its
// extension-release fields, or the exact bytes (ReleaseDigest, recorded at
// install; ExpectImage reads both from a stored image), or that it is
// absent. Prover.Prove compares that with systemd-sysext status (Sysext)
// and the merged usr/lib/extension-release.d/extension-release.NAME, read
// inside the root. A merge is judged by the merged tree and by systemd's
// status, never by systemd-sysext's exit code alone.
//
// # Driver
//
// Driver runs one activation through steps the caller supplies (switch the
// link, revert it, refresh, prove, record the status): pending, activate,
// refresh, refreshed, prove, proven; on a failed step failed, revert,
// refresh, prove the previous version, rolled back. Each status is
// recorded before the step that follows it, so Resume finishes what a
// killed run left, from the recorded status. The status words are
// extension.ActivationStatus, the type the store records. Outcome.Sentence
// says what happened in one sentence; Outcome.Err is non-nil unless the new
// version is active.
//
// # Signed disk images
//
// verity.go hands a signed disk image to systemd (the certificate in
// /etc/verity.d, the image policy root=signed+absent where the host's
// systemd takes one) and says per disk image whether dm-verity enforces it.
//
// # systemd
//
// RefreshCommand says which command merges again safely on a systemd
// version (systemd-sysext refresh from 257, a restart of
// systemd-sysext.service before). RefreshWith adapts a refresher of the
// node's shape to Driver.Refresh; an OutputRefresher (SysextRefresher, the
// node's command refreshers) also returns what systemd printed when it
// exited 0, which 252 does after a failed overlay mount, so a failed proof
// gives systemd's own words (Cause picks them out of the progress lines).
//
// The package never calls systemctl itself and never writes node state:
// Record is the caller's. It does not guarantee that a proven extension's
// services work, only that its files are what /usr shows; two images with
// identical extension-release files cannot be told apart by the proof.
package activate
