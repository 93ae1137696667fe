package extension

import "fmt"

// maxImageField bounds IMAGE_ID and IMAGE_VERSION values we carry (they
// become manifest annotations and appear in messages).
const maxImageField = 255

// ValidateImageField checks an IMAGE_ID or IMAGE_VERSION value as
// os-release(5) describes them (0-9, a-z, ".", "_", "-"), also accepting
// upper-case letters, "+" and "~", which real images use in versions.
// Anything else (spaces, quotes, control characters) is refused, so the
// value is safe in annotations, file contents and terminal output.
func ValidateImageField(key, value string) error {
	if value == "" {
		return fmt.Errorf("%s is empty", key)
	}
	if len(value) > maxImageField {
		return fmt.Errorf("%s is %d bytes long, more than %d", key, len(value), maxImageField)
	}
	for i := 0; i < len(value); i++ {
		c := value[i]
		switch {
		case c >= '0' && c <= '9', c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z':
		case c == '.' || c == '_' || c == '-' || c == '+' || c == '~':
		default:
			return fmt.Errorf("%s=%q has %q, which os-release(5) does not allow (0-9, a-z, '.', '_', '-')", key, value, c)
		}
	}
	return nil
}
