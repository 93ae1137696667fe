package node

import (
	"context"
	"errors"
	"sync"

	"github.com/opencontainers/go-digest"

	"github.com/sysext/sysext/extension"
	"github.com/sysext/sysext/oci"
	"github.com/sysext/sysext/verify"
)

// registries is the mirror configuration a Node reads once, from its root.
type registries struct {
	once sync.Once
	opts oci.Options
	err  error
}

// ociOptions are the registry options of this node's operations: the
// command line's, plus the registry configuration (mirrors, locations,
// blocked prefixes) of oci.RegistriesConfFiles read inside the root unless
// Options.OCI.Registries is set, and the node's log for mirror fallbacks.
func (n *Node) ociOptions() (oci.Options, error) {
	n.reg.once.Do(func() {
		o := n.opts.OCI
		if o.Registries == nil && !n.opts.NoRegistriesConf {
			o.Registries, n.reg.err = oci.LoadRegistries(n.opts.Store.Root, func(s string) { n.warnf("%s", s) })
		}
		if o.Log == nil {
			o.Log = func(s string) { n.logf("%s", s) }
		}
		n.reg.opts = o
	})
	return n.reg.opts, n.reg.err
}

// openRef opens the store ref lives in, through its mirrors.
func (n *Node) openRef(ctx context.Context, ref oci.Reference) (oci.Target, error) {
	o, err := n.ociOptions()
	if err != nil {
		return nil, err
	}
	return oci.Open(ctx, ref, o)
}

// verifyPlan applies the trust policy to what p resolved. Signatures are
// read through the mirrors like the rest, and checked for the reference
// as named (its origin's identity), so a mirror cannot make other content
// pass. When what the mirrors served does not verify, the origin is asked
// for the signatures; when the tag itself was answered by a mirror, that
// mirror is dropped for tags and the plan resolved again from the next
// source (retry is then set). A mirror can make a pull fail, never make
// it succeed with something else.
func (n *Node) verifyPlan(ctx context.Context, p *pullPlan, tr Trust) (v verify.Verified, retry bool, err error) {
	v, err = p.earlyVerify.result(ctx, p.res.Descriptor.Digest)
	if errors.Is(err, errNotStartedFor) {
		v, err = n.opts.Verifier.Verify(ctx, p.t, p.ref, p.res, tr)
	}
	var nv *verify.NoValidSignatureError
	if err == nil || !errors.As(err, &nv) {
		return v, false, err
	}
	if origin, ok := oci.Origin(p.t); ok {
		n.logf("%s: no valid signature among those the mirrors served; reading the signatures from the origin", p.ref)
		if v, err2 := n.opts.Verifier.Verify(ctx, origin, p.ref, p.res, tr); err2 == nil {
			return v, false, nil
		}
	}
	if p.ref.Digest == "" {
		if mirror, ok := oci.RejectTagSource(p.t, p.ref.Tag); ok {
			n.logf("%s: what mirror %s says tag %s points to (%s) has no valid signature; asking the next source", p.ref, mirror, p.ref.Tag, extension.ShortDigest(string(p.res.Root.Digest)))
			return v, true, err
		}
	}
	return v, false, err
}

// earlyVerify is a signature check started from the digest an index names
// for the manifest, while the manifest is read (plan): only the digest is
// signed, so the check needs nothing else; its answer counts only for the
// manifest resolved from that digest.
type earlyVerify struct {
	digest digest.Digest
	cancel context.CancelFunc
	done   chan struct{}
	v      verify.Verified
	err    error
}

// errNotStartedFor says an early check was for another manifest, or none
// was started.
var errNotStartedFor = errors.New("no signature check was started for this manifest")

// startVerify starts checking the signatures of r's manifest, of which
// only the descriptor is known (nil without a verifier).
func (n *Node) startVerify(ctx context.Context, p *pullPlan, r *oci.Resolved, tr Trust) *earlyVerify {
	if n.opts.Verifier == nil {
		return nil
	}
	ctx, cancel := context.WithCancel(ctx)
	ev := &earlyVerify{digest: r.Descriptor.Digest, cancel: cancel, done: make(chan struct{})}
	t, ref := p.t, p.ref
	go func() {
		defer close(ev.done)
		ev.v, ev.err = n.opts.Verifier.Verify(ctx, t, ref, r, tr)
	}()
	return ev
}

// result waits for the check when it was started for the manifest d,
// else stops it and returns errNotStartedFor.
func (ev *earlyVerify) result(ctx context.Context, d digest.Digest) (verify.Verified, error) {
	if ev == nil || ev.digest != d {
		ev.stop()
		return verify.Verified{}, errNotStartedFor
	}
	select {
	case <-ev.done:
	case <-ctx.Done():
		ev.stop()
		return verify.Verified{}, ctx.Err()
	}
	if ev.err == nil {
		if err := ev.v.Check(d); err != nil {
			return verify.Verified{}, err
		}
	}
	return ev.v, ev.err
}

// stop cancels the check and waits for it to end; safe on nil and twice.
func (ev *earlyVerify) stop() {
	if ev == nil {
		return
	}
	ev.cancel()
	<-ev.done
}

// stopEarly stops what plan started early.
func (p *pullPlan) stopEarly() {
	p.early.Stop()
	p.earlyVerify.stop()
}
