package oci_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"

	"oras.land/oras-go/v2/registry/remote/errcode"

	"github.com/sysext/sysext/oci"
	"github.com/sysext/sysext/oci/ocitest"
)

// A failed copy says which side failed, as a *CopyError, not only in its
// words: a missing source is the source's, a destination that refuses the
// upload is the destination's.
func TestCopyErrorNamesTheSide(t *testing.T) {
	ctx := context.Background()
	srcReg := ocitest.NewOlareg(t)
	p := pushImage(t, srcReg, 4<<10)

	dst, dref := ocitest.NewOlareg(t).Open(t, "copy/hello:1.0")
	missing := srcReg.Reference(t, "ext/hello:nope")
	_, err := oci.Copy(ctx, p.tg, missing, dst, dref, oci.CopyOptions{})
	var ce *oci.CopyError
	if !errors.As(err, &ce) || ce.Origin != oci.CopyOriginSource || ce.Op != "resolve" || ce.Ref.String() != missing.String() {
		t.Fatalf("missing source: got %#v (%v), want a source resolve CopyError", ce, err)
	}
	if !errors.Is(err, oci.ErrNotFound) {
		t.Fatalf("missing source: %v does not match ErrNotFound", err)
	}

	writes := func(r *http.Request) bool { return r.Method == http.MethodPut || r.Method == http.MethodPost }
	refusing, on := faultyReg(t, ocitest.FailStatus(http.StatusForbidden, -1, writes))
	*on = true
	rdst, rref := refusing.Open(t, "copy/hello:1.0")
	_, err = oci.Copy(ctx, p.tg, p.ref, rdst, rref, oci.CopyOptions{})
	ce = nil
	if !errors.As(err, &ce) || ce.Origin != oci.CopyOriginDestination || ce.Ref.String() != rref.String() {
		t.Fatalf("refusing destination: got %#v (%v), want a destination CopyError", ce, err)
	}
	var er *errcode.ErrorResponse
	if !errors.As(err, &er) || er.StatusCode != http.StatusForbidden || !strings.Contains(err.Error(), "access denied") {
		t.Fatalf("refusing destination: %v: the registry's 403 is lost or not explained", err)
	}
	if got := ce.Origin.String(); got != "destination" {
		t.Fatalf("Origin.String() = %q", got)
	}
}
