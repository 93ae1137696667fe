package node

import "testing"

// Changes: what update and sync count as work done (exit 0, not 3).
func TestResultChanges(t *testing.T) {
	for action, want := range map[string]bool{
		"pulled": false, "unchanged": false, "failed": false, "skipped": false, "needs-download": false,
		"would-pull": true, "would-update": true, "would-remove": true,
	} {
		if got := (Result{Action: action}).Changes(); got != want {
			t.Errorf("%s: Changes() = %v, want %v", action, got, want)
		}
	}
	if !(Result{Action: "pulled", Changed: true}).Changes() {
		t.Error("a changed result does not count")
	}
}
