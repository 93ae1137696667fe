package oci

import (
	"fmt"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
)

// A network failure gets a sentence that says what to check, and keeps the
// cause.
func TestExplainNetworkFailures(t *testing.T) {
	ref, err := ParseReference("127.0.0.1:1/ext/hello:1")
	if err != nil {
		t.Fatal(err)
	}
	refused := fmt.Errorf("resolve: %w", &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)})
	notFound := fmt.Errorf("resolve: %w", &net.OpError{Op: "dial", Net: "tcp", Err: &net.DNSError{Name: "registry.invalid", Err: "no such host", IsNotFound: true}})
	for _, c := range []struct {
		err  error
		want string
	}{
		{refused, "nothing answers at 127.0.0.1:1: check the registry address"},
		{notFound, "cannot resolve the registry host registry.invalid"},
	} {
		got := Explain(ref, c.err)
		if !strings.Contains(got.Error(), c.want) {
			t.Errorf("Explain(%v) = %q, want it to contain %q", c.err, got, c.want)
		}
		if got == c.err || !strings.Contains(got.Error(), c.err.Error()) {
			t.Errorf("Explain(%v) lost the cause: %q", c.err, got)
		}
	}
}
