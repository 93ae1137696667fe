package activate_test

import (
	"context"
	"fmt"

	"github.com/sysext/sysext/activate"
	"github.com/sysext/sysext/extension"
)

// A node activates hello 2.0 over 1.0; systemd-sysext exits 0 but does not
// merge it. The driver records each status before the next step, switches
// back by itself, proves 1.0 merged again, and says so in one sentence
// with systemd's words.
func ExampleDriver() {
	link := "hello-1.0.raw"
	d := &activate.Driver{
		New:      activate.Expect{Name: "hello", Version: "2.0"},
		Previous: activate.Expect{Name: "hello", Version: "1.0"},
		Activate: func(context.Context) error { link = "hello-2.0.raw"; return nil },
		Revert:   func(context.Context) error { link = "hello-1.0.raw"; return nil },
		Refresh: func(context.Context) (string, error) {
			if link == "hello-2.0.raw" {
				return "Using extensions 'hello'.\nFailed to mount overlay (type overlay) on /usr: Invalid argument\n", nil
			}
			return "Using extensions 'hello'.\n", nil
		},
		Prove: func(_ context.Context, want activate.Expect) error {
			if want.Version == "2.0" {
				return &activate.ProofError{Expect: want, Reason: "systemd-sysext lists no extension"}
			}
			return nil
		},
		Record: func(_ context.Context, s extension.ActivationStatus, _ string) error {
			fmt.Println("record:", s)
			return nil
		},
	}
	o, err := d.Run(context.Background())
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(o.Sentence())
	fmt.Println("link:", link, "error:", o.Err() != nil)
	// Output:
	// record: pending
	// record: refreshed
	// record: failed
	// record: rolled-back
	// hello 2.0 did not merge (systemd-sysext lists no extension; systemd-sysext said: Failed to mount overlay (type overlay) on /usr: Invalid argument); rolled back: hello 1.0 is active and merged.
	// link: hello-1.0.raw error: true
}

// systemd-sysext status without --json (systemd before 252 prints only the
// table): one row per hierarchy, continued rows for more extensions.
func ExampleParseStatusText() {
	m, err := activate.ParseStatusText([]byte(`HIERARCHY EXTENSIONS SINCE
/opt      none       -
/usr      hello      Sun 2026-11-22 03:09:54 UTC
          world
`))
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(m.Names(), m.Has("world"), m.Has("other"))
	// Output: [hello world] true false
}

// Which command merges again safely: systemd-sysext refresh from 257 on, a
// restart of the service before (and when the version is unknown).
func ExampleRefreshCommand() {
	fmt.Println(activate.RefreshCommand(257))
	fmt.Println(activate.RefreshCommand(252))
	fmt.Println(activate.RefreshCommand(0))
	// Output:
	// [systemd-sysext refresh]
	// [systemctl restart systemd-sysext.service]
	// [systemctl restart systemd-sysext.service]
}
