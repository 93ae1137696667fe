// Package activate makes activating an extension safe: a preflight that
// refuses what would break the host's merge before anything is touched
// (including a disk image the kernel cannot set up dm-verity for), a
// proof that systemd-sysext really merged the installed image after a
// refresh, a driver that rolls back by itself when the proof fails, and
// systemd-sysext's own view of what is merged (Sysext.Status), which node's
// status sets next to sysext's state. verity.go hands a signed disk image to
// systemd (the certificate in /etc/verity.d, the image policy
// root=signed+absent where the host's systemd takes one) and says per disk
// image whether dm-verity enforces it.
//
// # Integration with node (its seams as of issue 5)
//
// Done by node/activate.go (Driver, Resume, ActivatePreflight) and
// cmd/sysext/check.go (--preflight); the recipes below are what it follows.
//
// Preflight (node.Preflighter, before any download):
//
//	rep := activate.Check(ctx, activate.System{Root: p.Root}, []activate.Image{{
//		Name: p.Name, Meta: p.Metadata,
//		Format: fsimage.Format(<"squashfs"|"erofs"|"gpt" from the layer media type or format annotation>),
//	}}, strict)
//	for _, w := range rep.Warnings() { log "warning: " + w.String() }
//	return rep.Err() // *PreflightError: each cause and the way out; nil to go on
//
// `sysext check --preflight [--strict] [IMAGE...]`: call runPreflight in
// cmd/sysext/status.go as it is (it is also `sysext status --preflight`).
//
// Post-activation check (node.Checker), one line:
//
//	return activate.CheckImage(ctx, a.Name, a.Install.Version, a.Image)
//
// It reads the expected extension-release from the stored image (fsimage)
// and proves that systemd-sysext status lists the extension and that the
// merged /usr/lib/extension-release.d/extension-release.NAME has the same
// fields (the same bytes when Expect.Release, a ReleaseDigest recorded at
// install, is given).
//
// Refresh: RefreshWith(refresher) adapts the node's Refresher
// (Refresh(ctx) error); when the refresher also has Output() string (as
// SysextRefresher does) the reason carries systemd's own words even when it
// exited 0, which 252 does after a failed overlay mount. RefreshCommand(v)
// says which command is safe for systemd v; SystemdVersion(root) reads v
// from a root without running anything from it.
//
// The whole sequence (instead of node's own activate): after s.Install has
// switched the link,
//
//	d := &activate.Driver{
//		New: newWant, Previous: prevWant, // ExpectImage(...); Expect{Name: name, Absent: true} when none
//		Offline:  n.offline(),
//		Activate: func(context.Context) error { return nil }, // s.Install switched it
//		Revert:   idempotent: s.Rollback(name) only while the link still points at the new file,
//		Refresh:  activate.RefreshWith(n.refresher()),
//		Prove:    activate.Prover{}.Prove,
//		Record: func(ctx context.Context, st extension.ActivationStatus, why string) error {
//			return s.SetActivation(name, store.Activation{Status: st, Reason: why})
//		},
//	}
//	o, err := d.Run(ctx)    // err: nothing changed; else record nothing more:
//	print o.Sentence(); return o.Err() // non-nil (exit non-zero) unless proven or unproven
//
// After store.Open, for each entry whose Activation.Status is pending,
// refreshed or failed (and unproven, on `sysext sync` of the running
// system), build the same Driver and call d.Resume(ctx, status, reason): it
// finishes the proof, or the rollback, that a killed run left.
//
// The status words are extension.ActivationStatus, the type the store
// records, so there is one list.
//
// # Invariants
//
// The preflight is pure (Preflight over Facts); Gather is the only part
// that reads the system, and every path it reads can be pointed at a test
// file. A merge is judged by the merged tree and by systemd-sysext status,
// never by systemd-sysext's exit code alone. The driver records each status
// before the step that follows it, so a run killed at any point is finished
// by the next. The package never calls systemctl and never writes node
// state itself: Record is the node's.
//
// It does not guarantee that a proven extension's services work, only that
// its files are what /usr shows; two images with identical extension-release
// files cannot be told apart by the proof.
package activate
