package node

import (
	"context"
	"fmt"
	"io"
	"os/exec"
	"strings"

	"github.com/opencontainers/go-digest"

	"github.com/sysext/sysext/activate"
	"github.com/sysext/sysext/extension"
	"github.com/sysext/sysext/fsimage"
	"github.com/sysext/sysext/oci"
	"github.com/sysext/sysext/store"
)

// activate runs after the link switch: it drives activate.Driver (record →
// refresh → prove; on failure record → switch back → refresh → prove the
// previous state) and returns the activation status. The error is non-nil
// unless the new version is proven (or unproven, offline).
func (n *Node) activate(ctx context.Context, s *store.Store, name string, in store.Install, prev *store.Install) (extension.ActivationStatus, error) {
	n.hook("activate")
	d := n.driver(ctx, s, name, in, prev)
	o, err := d.Run(ctx)
	if err != nil {
		return "", err
	}
	return o.Status, o.Err()
}

// driver builds the activation driver for NAME switching from prev (nil:
// none) to in.
func (n *Node) driver(ctx context.Context, s *store.Store, name string, in store.Install, prev *store.Install) *activate.Driver {
	expect := func(i *store.Install) activate.Expect {
		if i == nil {
			return activate.Expect{Name: name, Absent: true}
		}
		if i.ReleaseDigest != "" && i.ReleaseDigest.Validate() == nil {
			// Recorded at install from the verified image: the proof
			// compares the merged file's bytes with it.
			return activate.Expect{Name: name, Version: i.Version, Release: i.ReleaseDigest}
		}
		// State written before the digest was recorded: compare fields.
		e, err := activate.ExpectImage(ctx, name, i.Version, s.ImagePath(name, i.File))
		if err != nil {
			// A GPT disk image cannot be read without mounting: expect the
			// extension merged, any version.
			return activate.Expect{Name: name, Version: i.Version}
		}
		return e
	}
	newWant, prevWant := expect(&in), expect(prev)
	return &activate.Driver{
		New:      newWant,
		Previous: prevWant,
		Offline:  n.offline(),
		Activate: func(context.Context) error { return nil }, // store.Install switched the link
		Revert: func(context.Context) error {
			// Idempotent: only while the link still points at the new file.
			if !s.LinkTargetIs(name, in.File) {
				return nil
			}
			n.hook("revert")
			if prev == nil {
				return s.Deactivate(name)
			}
			_, err := s.Rollback(name)
			return err
		},
		Refresh: activate.RefreshWith(n.refresher()),
		Prove: func(ctx context.Context, want activate.Expect) error {
			n.hook("prove")
			if n.opts.Checker != nil {
				a := Activation{Name: name, Root: s.Options().Root, Offline: n.offline()}
				switch {
				case want.Absent:
					return nil
				case want.Absent == newWant.Absent && want.Version == newWant.Version && want.Fields == newWant.Fields && want.Release == newWant.Release:
					a.Install, a.Previous, a.Image = in, prev, s.ImagePath(name, in.File)
				default:
					a.Install, a.Image = *prev, s.ImagePath(name, prev.File)
				}
				return n.opts.Checker.Check(ctx, a)
			}
			if !n.onRunningSystem(s) {
				return nil // RefreshWithRoot without a Checker: the refresh is the proof
			}
			return activate.Prover{}.Prove(ctx, want)
		},
		Record: func(_ context.Context, st extension.ActivationStatus, why string) error {
			return s.SetActivation(name, store.Activation{Status: st, Reason: why, Tried: in.File})
		},
	}
}

// releaseDigestOf is the digest of the extension-release file inside the
// image at path, "" when it cannot be read (a GPT disk image).
func releaseDigestOf(ctx context.Context, path string) digest.Digest {
	info, err := fsimage.OpenMetadata(ctx, path)
	if err != nil || info.ReleaseBytes == nil {
		return ""
	}
	return activate.ReleaseDigest(info.ReleaseBytes)
}

func (n *Node) onRunningSystem(s *store.Store) bool {
	return s.Options().RunningSystem()
}

// resume finishes activations a killed or failed run left (pending,
// refreshed, failed; unproven when finishUnproven, which sync sets at boot
// on the running system). Problems are logged, not returned: they belong to
// the earlier run.
func (n *Node) resume(ctx context.Context, s *store.Store, finishUnproven bool) {
	if n.offline() {
		return
	}
	for _, name := range s.State().Names() {
		e, _ := s.Entry(name)
		st := e.Activation.Status
		switch st {
		case extension.ActivationPending, extension.ActivationRefreshed, extension.ActivationFailed:
		case extension.ActivationUnproven:
			if !finishUnproven {
				continue
			}
		default:
			continue
		}
		tried := e.Activation.Tried
		if tried == "" {
			tried = e.Active.File
		}
		var in store.Install
		var prev *store.Install
		switch {
		case tried == e.Active.File:
			in = e.Active
			if len(e.Previous) > 0 {
				p := e.Previous[0]
				prev = &p
			}
		case len(e.Previous) > 0 && tried == e.Previous[0].File:
			// Already switched back; only the proof of the previous one is left.
			in = e.Previous[0]
			p := e.Active
			prev = &p
		default:
			continue
		}
		o, err := n.driver(ctx, s, name, in, prev).Resume(ctx, st, e.Activation.Reason)
		if err != nil {
			n.warnf("%s: finishing the earlier activation: %v", name, err)
			continue
		}
		n.logf("%s: finished an earlier activation: %s", name, o.Sentence())
	}
}

func (n *Node) refresher() Refresher {
	if n.opts.Refresher != nil {
		return n.opts.Refresher
	}
	return SystemdRefresher{}
}

// SystemdRefresher refreshes the running system with the command
// activate.RefreshCommand picks for its systemd: `systemctl restart
// systemd-sysext.service` before 257, `systemd-sysext refresh` from 257 on.
// It is an activate.OutputRefresher: what the command printed reaches the
// reason of a failed proof even when it exited 0.
type SystemdRefresher struct{}

// Refresh implements Refresher.
func (r SystemdRefresher) Refresh(ctx context.Context) error {
	_, err := r.RefreshOutput(ctx)
	return err
}

// RefreshOutput runs the command and returns what it printed.
func (SystemdRefresher) RefreshOutput(ctx context.Context) (string, error) {
	v, _ := activate.SystemdVersion("/") // 0 (unknown) takes the safe, older form
	argv := activate.RefreshCommand(v)
	if argv[0] == "systemd-sysext" {
		argv = append(argv, activate.RefreshArgs("/", v)...) // the image policy, 254-258
	}
	return CommandRefresher{Argv: argv}.RefreshOutput(ctx)
}

// CommandRefresher runs a command (tests: `systemd-sysext refresh` inside
// their private namespace). An empty command does nothing. It is an
// activate.OutputRefresher.
type CommandRefresher struct{ Argv []string }

// Refresh implements Refresher.
func (c CommandRefresher) Refresh(ctx context.Context) error {
	_, err := c.RefreshOutput(ctx)
	return err
}

// RefreshOutput runs the command and returns what it printed (stdout and
// stderr, at most 500 bytes), when it succeeded too.
func (c CommandRefresher) RefreshOutput(ctx context.Context) (string, error) {
	if len(c.Argv) == 0 {
		return "", nil
	}
	cmd := exec.CommandContext(ctx, c.Argv[0], c.Argv[1:]...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return trim(out), &activate.SystemdError{Command: cmd.String(), Output: trim(out), Err: err}
	}
	return trim(out), nil
}

func trim(b []byte) string {
	if len(b) > 500 {
		b = b[:500]
	}
	return string(b)
}

// ActivatePreflight is the production Preflighter: activate's checks of the
// kernel, overlayfs stacking and the target root's systemd. Warnings go to
// Log; Strict refuses on them too.
type ActivatePreflight struct {
	Strict bool
	Log    io.Writer
	// System points the checks at test files (its Root is the plan's);
	// the zero value is the running system.
	System activate.System
	// printed keeps each warning to one line per run: a sync of several
	// extensions checks the same system for each.
	printed map[string]bool
}

// Preflight implements Preflighter.
func (p *ActivatePreflight) Preflight(ctx context.Context, plan Plan) error {
	sys := p.System
	sys.Root = plan.Root
	rep := activate.Check(ctx, sys, []activate.Image{{Name: plan.Name, Meta: plan.Metadata, Format: plan.Format, Compression: plan.Compression, Verity: verityImage(plan.Entry)}}, p.Strict)
	if p.Log != nil && !p.Strict {
		for _, w := range rep.Warnings() {
			line := w.String()
			if p.printed[line] {
				continue
			}
			if p.printed == nil {
				p.printed = map[string]bool{}
			}
			p.printed[line] = true
			fmt.Fprintf(p.Log, "warning: %s\n", line)
		}
	}
	return rep.Err()
}

// layerCompression is the EROFS compressors the manifest announces (nil
// when it does not say): a few short words at most, since the manifest is
// untrusted.
func layerCompression(e *oci.Entry) []string {
	if e == nil || layerFormat(e) != fsimage.EROFS {
		return nil
	}
	algs := strings.Fields(e.Manifest.Annotations[oci.AnnotationCompression])
	if len(algs) > 4 {
		algs = algs[:4]
	}
	return algs
}

// layerFormat is the filesystem the manifest announces ("" when unknown).
func layerFormat(e *oci.Entry) fsimage.Format {
	if e == nil {
		return ""
	}
	switch e.Layer.MediaType {
	case oci.MediaTypeSquashfs:
		return fsimage.Squashfs
	case oci.MediaTypeEROFS:
		return fsimage.EROFS
	case oci.MediaTypeDisk:
		return fsimage.GPT
	}
	return ""
}
