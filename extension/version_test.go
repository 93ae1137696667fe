package extension

import "testing"

// TestCompareVersions checks systemd's own ordering examples
// (strverscmp_improved's test suite and the UAPI version format
// specification): each version is older than every one after it.
func TestCompareVersions(t *testing.T) {
	ordered := []string{
		"", "~1", "ab", "abb", "abc", "0001", "002", "12", "122", "122.9",
		"123~rc1", "123", "123-a", "123-a.1", "123-a1", "123-a1.1", "123-3", "123-3.1",
		"123^patch1", "123^1", "123.a-1", "123.1-1", "123a-1", "124",
	}
	for i, older := range ordered {
		if CompareVersions(older, older) != 0 {
			t.Errorf("%q != itself", older)
		}
		for _, newer := range ordered[i+1:] {
			if CompareVersions(newer, older) <= 0 || CompareVersions(older, newer) >= 0 {
				t.Errorf("want %q < %q: got %d, %d", older, newer, CompareVersions(older, newer), CompareVersions(newer, older))
			}
		}
	}
	for _, p := range [][2]string{ // newer, older
		{"123.45-67.89", "123.45-67.88"},
		{"123.45-67.89a", "123.45-67.89"},
		{"123.45-67.89", "123.45-67.ab"},
		{"123.45-67.89", "123.45-67.9"},
		{"123.45-67.89", "123.45-67"},
		{"123.45-67.89", "123.45-66.89"},
		{"123.45-67.89", "123.45-9.99"},
		{"123.45-67.89", "123.42-99.99"},
		{"123.45-67.89", "123-99.99"},
		{"123.45-67.89", "123~rc1-99.99"},
		{"123-45.67.89", "123~rc1-99.99"},
		{"123~rc2-67.89", "123~rc1-99.99"},
		{"123^aa2-67.89", "123~rc1-99.99"},
		{"123aa2-67.89", "123~rc1-99.99"},
		{"123^aa2-67.89", "123-99.99"},
		{"123aa2-67.89", "123-99.99"},
		{"123.45-67.89", "123^45-67.89"},
		{"123^aa2-67.89", "123^aa1-99.99"},
		{"123aa2-67.89", "123^aa2-67.89"},
		{"123aa2-67.89", "123.aa2-67.89"},
		{"123.ab2-67.89", "123.aa2-67.89"},
		// What nodes see.
		{"2.0", "1.0"}, {"24.0.10", "24.0.9"}, {"1.10", "1.9"}, {"2.0", "2.0~rc1"}, {"v2", "v1"},
	} {
		if CompareVersions(p[0], p[1]) <= 0 || CompareVersions(p[1], p[0]) >= 0 {
			t.Errorf("want %q > %q", p[0], p[1])
		}
	}
	// Characters outside the set are skipped.
	if r := CompareVersions("123_aa2-67.89", "123aa+2-67.89"); r != 0 {
		t.Errorf("invalid characters: %d", r)
	}
}

func FuzzCompareVersions(f *testing.F) {
	f.Add("1.0", "1.0~rc1")
	f.Add("123^a", "123.a-1")
	f.Fuzz(func(t *testing.T, a, b string) {
		if x, y := CompareVersions(a, b), CompareVersions(b, a); x != -y {
			t.Fatalf("not antisymmetric: %q %q: %d %d", a, b, x, y)
		}
	})
}
