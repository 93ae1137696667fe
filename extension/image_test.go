package extension

import "testing"

func TestValidateImageField(t *testing.T) {
	for _, ok := range []string{"fedora-coreos", "42.20250101.0", "bluefin_dx", "1.0~rc1+git.ab12", "Kinoite"} {
		if err := ValidateImageField(FieldImageID, ok); err != nil {
			t.Errorf("%q refused: %v", ok, err)
		}
	}
	long := make([]byte, maxImageField+1)
	for i := range long {
		long[i] = 'a'
	}
	for _, bad := range []string{"", "a b", "a\"b", "a/b", "a\nb", "\x1b[31m", "ä", string(long)} {
		if err := ValidateImageField(FieldImageVersion, bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
