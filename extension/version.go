package extension

import "cmp"

// CompareVersions orders two extension versions the way systemd does
// (strverscmp_improved, the UAPI Version Format Specification): it returns
// a negative number when a is older than b, zero when they are equivalent,
// a positive number when a is newer.
//
// Characters other than ASCII letters, digits and ".-~^" are skipped. Then,
// segment by segment: '~' (a pre-release) sorts before anything, even the
// end of the string; a string that ends sorts before one that goes on;
// '-' (version/release) sorts before other segments, '^' (a patch) after
// the end but before other segments, '.' before letters and digits;
// numbers compare by value and are newer than letters; letter runs compare
// as bytes, a longer run being newer.
func CompareVersions(a, b string) int {
	if a == "" || b == "" {
		return cmp.Compare(len(a), len(b))
	}
	i, j := 0, 0
	at := func(s string, k int) byte {
		if k < len(s) {
			return s[k]
		}
		return 0
	}
	for {
		for i < len(a) && !versionChar(a[i]) {
			i++
		}
		for j < len(b) && !versionChar(b[j]) {
			j++
		}
		ca, cb := at(a, i), at(b, j)
		if ca == '~' || cb == '~' {
			if r := cmp.Compare(b2i(ca != '~'), b2i(cb != '~')); r != 0 {
				return r
			}
			i, j = i+1, j+1
			ca, cb = at(a, i), at(b, j)
		}
		if ca == 0 || cb == 0 {
			return cmp.Compare(int(ca), int(cb))
		}
		for _, sep := range []byte{'-', '^', '.'} {
			if ca == sep || cb == sep {
				if r := cmp.Compare(b2i(ca != sep), b2i(cb != sep)); r != 0 {
					return r
				}
				i, j = i+1, j+1
				ca, cb = at(a, i), at(b, j)
			}
		}
		ea, eb := i, j
		if isDigit(ca) || isDigit(cb) {
			for ea < len(a) && isDigit(a[ea]) {
				ea++
			}
			for eb < len(b) && isDigit(b[eb]) {
				eb++
			}
			// A number is newer than no number (a letter or the end).
			if r := cmp.Compare(b2i(ea > i), b2i(eb > j)); r != 0 {
				return r
			}
			for i < ea && a[i] == '0' {
				i++
			}
			for j < eb && b[j] == '0' {
				j++
			}
			if r := cmp.Compare(ea-i, eb-j); r != 0 {
				return r // more digits without leading zeros: a larger number
			}
			if r := cmp.Compare(a[i:ea], b[j:eb]); r != 0 {
				return r
			}
		} else {
			for ea < len(a) && isAlpha(a[ea]) {
				ea++
			}
			for eb < len(b) && isAlpha(b[eb]) {
				eb++
			}
			n := min(ea-i, eb-j)
			if r := cmp.Compare(a[i:i+n], b[j:j+n]); r != 0 {
				return r
			}
			if r := cmp.Compare(ea-i, eb-j); r != 0 {
				return r
			}
		}
		i, j = ea, eb
	}
}

func versionChar(c byte) bool {
	return isDigit(c) || isAlpha(c) || c == '~' || c == '-' || c == '^' || c == '.'
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }
func isAlpha(c byte) bool { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}
