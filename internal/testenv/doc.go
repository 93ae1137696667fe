// Package testenv is shared by the project's tests: it decides whether a
// test that needs root or an outside tool runs, skips (only outside CI) or
// fails (in CI, where everything must be installed), and runs the real
// systemd-sysext inside a private mount namespace so that no test changes
// the host.
package testenv
