package main

import "testing"

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{"100": 100, "1K": 1024, "500M": 500 << 20, "2G": 2 << 30, "1.5GiB": 3 << 29, "3MB": 3 << 20, "1t": 1 << 40} {
		if got, err := parseSize(in); err != nil || got != want {
			t.Errorf("%s: %d %v, want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "M", "-1", "0", "abc", "1X", "NaN", "99999999999T"} {
		if _, err := parseSize(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
