package activate

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/sysext/sysext/extension"
)

// Driver activates one extension version and proves the merge, rolling back
// by itself when the proof fails. Its steps are functions so the node plugs
// in its store and refresher, and tests plug in faults.
type Driver struct {
	// New is what Activate switches to; Previous what Revert switches back
	// to (Absent when there was no previous version).
	New, Previous Expect
	// Offline (--root): switch the link, do not refresh, record unproven.
	Offline bool

	// Activate points the activation link at New. Revert points it back at
	// Previous or removes it. Both must be idempotent: after a crash the
	// next run may call Revert again, and it must not step back further.
	Activate func(ctx context.Context) error
	Revert   func(ctx context.Context) error
	// Refresh makes systemd-sysext merge the current set again and returns
	// what systemd printed (kept to explain a failed proof even when it
	// exited 0). Sysext.Refresh is one; on systemd < 257 the node restarts
	// systemd-sysext.service instead (RefreshCommand).
	Refresh func(ctx context.Context) (output string, err error)
	// Prove checks that the expected version is merged (Prover.Prove).
	Prove func(ctx context.Context, want Expect) error
	// Record persists the status and reason in the node's state before the
	// next step runs, so a killed run is finished by the next one (Resume).
	// Optional.
	Record func(ctx context.Context, s extension.ActivationStatus, reason string) error
}

// Outcome is what an activation ended with, for the state file and the user.
type Outcome struct {
	Name   string                     `json:"name"`
	Status extension.ActivationStatus `json:"status"`
	// Tried is the version that was activated; Active the one active now
	// ("" when none is).
	Tried  string `json:"tried,omitempty"`
	Active string `json:"active,omitempty"`
	// Reason is the cause when the proof failed, in systemd's words where it
	// gave any; the note for unproven.
	Reason string `json:"reason,omitempty"`
	// Warnings are problems that did not change the outcome (a status that
	// could not be recorded).
	Warnings []string `json:"warnings,omitempty"`
}

// Sentence says in one sentence what happened and what is active now.
func (o Outcome) Sentence() string {
	tried := strings.TrimSpace(o.Name + " " + o.Tried)
	active := "no version of " + o.Name + " is active"
	if o.Active != "" {
		active = o.Name + " " + o.Active + " is active"
	}
	var s string
	switch o.Status {
	case extension.ActivationProven:
		s = tried + " is merged and proven"
	case extension.ActivationUnproven:
		s = tried + " is activated in the target root; " + o.Reason
	case extension.ActivationRolledBack:
		s = fmt.Sprintf("%s did not merge (%s); rolled back: %s and merged", tried, o.Reason, active)
	case extension.ActivationFailed:
		s = fmt.Sprintf("%s did not merge and the rollback did not restore a proven merge (%s); run 'sysext status' to see what is merged", tried, o.Reason)
	default:
		s = fmt.Sprintf("%s: %s (%s)", tried, o.Status, o.Reason)
	}
	if len(o.Warnings) > 0 {
		s += "; " + strings.Join(o.Warnings, "; ")
	}
	return s + "."
}

// Err is nil when the new version is active (proven, or unproven offline),
// and an *OutcomeError otherwise, so the command exits non-zero.
func (o Outcome) Err() error {
	switch o.Status {
	case extension.ActivationProven, extension.ActivationUnproven:
		return nil
	}
	return &OutcomeError{o}
}

// OutcomeError is an activation that did not end with the new version merged.
type OutcomeError struct{ Outcome Outcome }

func (e *OutcomeError) Error() string { return e.Outcome.Sentence() }

// UnprovenReason is recorded for an offline activation.
const UnprovenReason = "the merge cannot be proven offline (--root); it will be proven at the next 'sysext sync'"

func (d *Driver) check() error {
	if d.Activate == nil || d.Revert == nil || (!d.Offline && (d.Refresh == nil || d.Prove == nil)) {
		return errors.New("activate: the driver needs Activate, Revert, Refresh and Prove")
	}
	return nil
}

func (d *Driver) record(ctx context.Context, o *Outcome, s extension.ActivationStatus, reason string) {
	if d.Record == nil {
		return
	}
	if err := d.Record(ctx, s, reason); err != nil {
		o.Warnings = append(o.Warnings, fmt.Sprintf("recording %s in the state failed: %v", s, err))
	}
}

// Run activates New: record pending → Activate → Refresh → Prove; when
// anything fails, record failed → Revert → Refresh → Prove Previous. The
// error is non-nil only when nothing was changed (the intent could not be
// recorded); everything else is in the Outcome.
func (d *Driver) Run(ctx context.Context) (Outcome, error) {
	if err := d.check(); err != nil {
		return Outcome{}, err
	}
	o := d.outcome()
	if d.Record != nil {
		if err := d.Record(ctx, extension.ActivationPending, ""); err != nil {
			return o, fmt.Errorf("%s: record the pending activation: %w", d.New.Name, err)
		}
	}
	if err := d.Activate(ctx); err != nil {
		return d.rollback(ctx, o, fmt.Sprintf("switching to %s failed: %v", d.New, err)), nil
	}
	if d.Offline {
		o.Status, o.Reason, o.Active = extension.ActivationUnproven, UnprovenReason, d.New.Version
		d.record(ctx, &o, extension.ActivationUnproven, UnprovenReason)
		return o, nil
	}
	return d.finish(ctx, o), nil
}

// Resume finishes an activation a previous run left with status s (read
// from the state file): pending, refreshed and unproven are refreshed and
// proven (rolled back on failure); failed finishes the rollback. The store
// has already made the link match the state when it opened, so Resume does
// not call Activate. Other statuses need nothing.
func (d *Driver) Resume(ctx context.Context, s extension.ActivationStatus, reason string) (Outcome, error) {
	if err := d.check(); err != nil {
		return Outcome{}, err
	}
	o := d.outcome()
	switch s {
	case extension.ActivationPending, extension.ActivationRefreshed, extension.ActivationUnproven:
		if d.Offline {
			o.Status, o.Reason, o.Active = extension.ActivationUnproven, UnprovenReason, d.New.Version
			if s != extension.ActivationUnproven {
				d.record(ctx, &o, extension.ActivationUnproven, UnprovenReason)
			}
			return o, nil
		}
		return d.finish(ctx, o), nil
	case extension.ActivationFailed:
		// Retrying keeps the first cause, not what the last try added.
		for _, sep := range []string{sepRevertFailed, sepAfterRevert} {
			if i := strings.Index(reason, sep); i > 0 {
				reason = reason[:i]
			}
		}
		if reason == "" {
			reason = "an earlier run failed"
		}
		if d.Offline {
			// Only the link can be restored offline.
			return d.revertOffline(ctx, o, reason), nil
		}
		return d.rollback(ctx, o, reason), nil
	}
	o.Status, o.Reason = s, reason
	if s == extension.ActivationRolledBack {
		o.Active = d.Previous.Version
	} else {
		o.Active = d.New.Version
	}
	return o, nil
}

func (d *Driver) outcome() Outcome {
	return Outcome{Name: d.New.Name, Tried: d.New.Version}
}

// finish refreshes and proves New, rolling back on failure.
func (d *Driver) finish(ctx context.Context, o Outcome) Outcome {
	out, err := d.Refresh(ctx)
	if err == nil {
		d.record(ctx, &o, extension.ActivationRefreshed, "")
		err = d.Prove(ctx, d.New)
	}
	if err != nil {
		return d.rollback(ctx, o, describe(err, out))
	}
	o.Status, o.Active, o.Reason = extension.ActivationProven, d.New.Version, ""
	d.record(ctx, &o, extension.ActivationProven, "")
	return o
}

// rollback records the cause, switches back, refreshes and proves Previous.
func (d *Driver) rollback(ctx context.Context, o Outcome, cause string) Outcome {
	o.Reason = cause
	// Recorded first: a run killed during the rollback is finished by the next.
	d.record(ctx, &o, extension.ActivationFailed, cause)
	if d.Offline {
		return d.revertOffline(ctx, o, cause)
	}
	if err := d.Revert(ctx); err != nil {
		o.Status, o.Active = extension.ActivationFailed, d.New.Version
		o.Reason = fmt.Sprintf("%s%s%s failed: %v", cause, sepRevertFailed, d.Previous, err)
		d.record(ctx, &o, extension.ActivationFailed, o.Reason)
		return o
	}
	out, err := d.Refresh(ctx)
	if err == nil {
		err = d.Prove(ctx, d.Previous)
	}
	if err != nil {
		o.Status, o.Active = extension.ActivationFailed, d.Previous.Version
		o.Reason = fmt.Sprintf("%s%s%s: %s", cause, sepAfterRevert, d.Previous, describe(err, out))
		d.record(ctx, &o, extension.ActivationFailed, o.Reason)
		return o
	}
	o.Status, o.Active = extension.ActivationRolledBack, d.Previous.Version
	d.record(ctx, &o, extension.ActivationRolledBack, cause)
	return o
}

func (d *Driver) revertOffline(ctx context.Context, o Outcome, cause string) Outcome {
	o.Reason = cause
	if err := d.Revert(ctx); err != nil {
		o.Status, o.Active = extension.ActivationFailed, d.New.Version
		o.Reason = fmt.Sprintf("%s%s%s failed: %v", cause, sepRevertFailed, d.Previous, err)
		d.record(ctx, &o, extension.ActivationFailed, o.Reason)
		return o
	}
	o.Status, o.Active = extension.ActivationRolledBack, d.Previous.Version
	d.record(ctx, &o, extension.ActivationRolledBack, cause)
	return o
}

// What a failed rollback appends to the cause.
const (
	sepRevertFailed = "; switching back to "
	sepAfterRevert  = "; after switching back to "
)

// describe joins a failed step's error with what systemd printed, so the
// reason names the cause systemd gave even when it exited 0.
func describe(err error, output string) string {
	s := err.Error()
	var pe *ProofError
	if errors.As(err, &pe) {
		s = pe.Reason // the sentence around it names the extension already
	}
	if c := Cause(output); c != "" && !strings.Contains(s, c) {
		s += "; systemd-sysext said: " + c
	}
	return s
}
