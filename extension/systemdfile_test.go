package extension

import "testing"

// TestSystemdFileValues: what may be written into a line of a systemd file.
func TestSystemdFileValues(t *testing.T) {
	injected := []string{
		"/etc/foo\nC /root/.ssh/authorized_keys - - - - /usr/share/evil/keys",
		"/etc/foo\rC /root/.ssh/authorized_keys",
		"/etc/foo\x00bar",
		"/etc/foo\u2028bar",
	}
	for _, v := range injected {
		if ValidateLineValue("v", v) == nil || ValidateLineWord("v", v) == nil || ValidateLinePath("v", v) == nil {
			t.Errorf("%q accepted", v)
		}
	}
	for _, v := range []string{"/etc/my file", "/etc/%h", "/etc/a\\x0a", "$HOME", "a;b", `"q"`, ""} {
		if ValidateLineWord("v", v) == nil {
			t.Errorf("ValidateLineWord(%q) = nil", v)
		}
	}
	for _, v := range []string{"/etc/docker/daemon.json", "/etc/a-b_c.d/x+y@z:1"} {
		if err := ValidateLinePath("v", v); err != nil {
			t.Errorf("ValidateLinePath(%q) = %v", v, err)
		}
	}
	for _, v := range []string{"etc/x", "/etc/../root/x", "/etc//x"} {
		if ValidateLinePath("v", v) == nil {
			t.Errorf("ValidateLinePath(%q) = nil", v)
		}
	}
	if err := ValidateLineValue("line", "d /run/x 0755 root root -\tx"); err != nil {
		t.Errorf("a tab: %v", err)
	}
	for _, u := range []string{"docker.service", "getty@tty1.service", "sys-devices-x\\x2dy.device", "a:b.timer", "foo@.service"} {
		if err := ValidateUnitName(u); err != nil {
			t.Errorf("ValidateUnitName(%q) = %v", u, err)
		}
	}
	for _, u := range []string{"docker", ".service", "a b.service", "a\nUpholds=b.service", "a%i.service", "a@b@c.service", "dö.service", "a.conf"} {
		if ValidateUnitName(u) == nil {
			t.Errorf("ValidateUnitName(%q) = nil", u)
		}
	}
}
