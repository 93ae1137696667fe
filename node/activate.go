package node

import (
	"context"
	"fmt"
	"os/exec"
	"regexp"
	"strconv"

	"github.com/sysext/sysext/store"
)

// activate runs after the link switch: refresh systemd-sysext (on the
// running system), run the check hook, and on failure switch back to the
// previous version and refresh again. It records the outcome in the state
// and returns the activation status.
func (n *Node) activate(ctx context.Context, s *store.Store, name string, in store.Install, prev *store.Install) (string, error) {
	a := Activation{Name: name, Install: in, Previous: prev, Image: s.ImagePath(name, in.File), Root: s.Options().Root, Offline: n.offline()}
	if a.Offline {
		reason := "offline: --root or --no-refresh; the merge is proven at the next refresh"
		if err := s.SetActivation(name, store.Activation{Status: store.ActivationUnproven, Reason: reason}); err != nil {
			return "", err
		}
		return store.ActivationUnproven, nil
	}
	n.hook("refresh")
	err := n.refresher().Refresh(ctx)
	if err == nil && n.opts.Checker != nil {
		n.hook("check")
		err = n.opts.Checker.Check(ctx, a)
	}
	if err == nil {
		status := store.ActivationRefreshed
		if n.opts.Checker != nil {
			status = store.ActivationProven
		}
		return status, s.SetActivation(name, store.Activation{Status: status})
	}
	cause := err
	if prev == nil {
		// Nothing to go back to: record the failure; the link stays so a
		// person can look, and 'sysext remove' undoes it.
		_ = s.SetActivation(name, store.Activation{Status: store.ActivationFailed, Reason: cause.Error()})
		return store.ActivationFailed, fmt.Errorf("%s %s: activation failed: %w; it stays linked but unproven: run 'sysext remove %s' to take it away", name, in.Version, cause, name)
	}
	n.hook("rollback")
	if _, rerr := s.Rollback(name); rerr != nil {
		_ = s.SetActivation(name, store.Activation{Status: store.ActivationFailed, Reason: cause.Error()})
		return store.ActivationFailed, fmt.Errorf("%s %s: activation failed: %w; switching back to %s failed too: %v", name, in.Version, cause, prev.Version, rerr)
	}
	if rerr := n.refresher().Refresh(ctx); rerr != nil {
		_ = s.SetActivation(name, store.Activation{Status: store.ActivationFailed, Reason: fmt.Sprintf("%v; refresh after switching back: %v", cause, rerr)})
		return store.ActivationFailed, fmt.Errorf("%s %s: activation failed: %w; switched back to %s, but refreshing failed too: %v", name, in.Version, cause, prev.Version, rerr)
	}
	_ = s.SetActivation(name, store.Activation{Status: store.ActivationRolledBack, Reason: fmt.Sprintf("%s %s: %v", in.Version, in.ManifestDigest, cause)})
	return store.ActivationRolledBack, fmt.Errorf("%s %s: activation failed: %w; %s is active again", name, in.Version, cause, prev.Version)
}

func (n *Node) refresher() Refresher {
	if n.opts.Refresher != nil {
		return n.opts.Refresher
	}
	return SystemdRefresher{}
}

// SystemdRefresher refreshes the running system: `systemctl restart
// systemd-sysext.service` on systemd < 257 (where `systemd-sysext refresh`
// from a unit can race the manager), `systemd-sysext refresh` from 257 on.
type SystemdRefresher struct{}

// Refresh implements Refresher.
func (SystemdRefresher) Refresh(ctx context.Context) error {
	v, err := SystemdVersion(ctx)
	if err != nil {
		return err
	}
	var cmd *exec.Cmd
	if v < 257 {
		cmd = exec.CommandContext(ctx, "systemctl", "restart", "systemd-sysext.service")
	} else {
		cmd = exec.CommandContext(ctx, "systemd-sysext", "refresh")
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%s: %w: %s", cmd, err, trim(out))
	}
	return nil
}

var systemdVersionRe = regexp.MustCompile(`^systemd (\d+)`)

// SystemdVersion returns the major version of systemd-sysext on PATH.
func SystemdVersion(ctx context.Context) (int, error) {
	out, err := exec.CommandContext(ctx, "systemd-sysext", "--version").Output()
	if err != nil {
		return 0, fmt.Errorf("systemd-sysext --version: %w (is systemd-sysext installed?)", err)
	}
	m := systemdVersionRe.FindSubmatch(out)
	if m == nil {
		return 0, fmt.Errorf("systemd-sysext --version: unexpected output %q", trim(out))
	}
	return strconv.Atoi(string(m[1]))
}

func trim(b []byte) string {
	if len(b) > 500 {
		b = b[:500]
	}
	return string(b)
}

// CommandRefresher runs a command (tests: `systemd-sysext refresh` inside
// their private namespace).
type CommandRefresher struct{ Argv []string }

// Refresh implements Refresher.
func (c CommandRefresher) Refresh(ctx context.Context) error {
	if len(c.Argv) == 0 {
		return nil
	}
	cmd := exec.CommandContext(ctx, c.Argv[0], c.Argv[1:]...)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%s: %w: %s", cmd, err, trim(out))
	}
	return nil
}
