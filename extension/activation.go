package extension

// ActivationStatus is where the activation of an installed extension
// stands: the node's state records it (store) and the activation driver
// moves it from one word to the next (activate). These are the only words.
type ActivationStatus string

const (
	ActivationPending    ActivationStatus = "pending"     // link switched, not yet refreshed
	ActivationRefreshed  ActivationStatus = "refreshed"   // systemd-sysext refreshed, merge not yet proven
	ActivationProven     ActivationStatus = "proven"      // the merged tree shows this image
	ActivationUnproven   ActivationStatus = "unproven"    // offline (--root): prove at the next sync
	ActivationRolledBack ActivationStatus = "rolled-back" // the proof failed; the previous state is back and proven
	ActivationFailed     ActivationStatus = "failed"      // the proof failed and the previous state is not (yet) back
)
