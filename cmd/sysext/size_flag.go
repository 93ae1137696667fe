package main

import (
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
)

// sizeFlag is a byte count given as 500M, 2G, 1.5GiB or plain bytes
// (binary units: K, M, G, T, with or without "iB" or "B").
type sizeFlag int64

func (s *sizeFlag) String() string {
	if *s == 0 {
		return ""
	}
	return strconv.FormatInt(int64(*s), 10)
}

func (s *sizeFlag) Type() string { return "SIZE" }

func (s *sizeFlag) Set(v string) error {
	n, err := parseSize(v)
	if err != nil {
		return err
	}
	*s = sizeFlag(n)
	return nil
}

func parseSize(v string) (int64, error) {
	t := strings.TrimSpace(v)
	for _, suffix := range []string{"iB", "B"} {
		if strings.HasSuffix(strings.ToUpper(t), strings.ToUpper(suffix)) && len(t) > len(suffix) {
			t = t[:len(t)-len(suffix)]
			break
		}
	}
	mult := 1.0
	if t != "" {
		if i := strings.IndexByte("KMGT", strings.ToUpper(t[len(t)-1:])[0]); i >= 0 {
			mult = math.Pow(1024, float64(i+1))
			t = t[:len(t)-1]
		}
	}
	f, err := strconv.ParseFloat(strings.TrimSpace(t), 64)
	if err != nil || f <= 0 || f*mult >= math.MaxInt64 || math.IsNaN(f) {
		return 0, fmt.Errorf("%q is not a size: give bytes or a number with K, M, G or T (binary), as in 2G", v)
	}
	return int64(f * mult), nil
}

// addMaxSizeFlag adds --max-size, which bounds what an extraction writes;
// what names what is extracted.
func addMaxSizeFlag(c *cobra.Command, s *sizeFlag, what string) {
	c.Flags().Var(s, "max-size", "refuse "+what+" that unpack to more than `SIZE` in all (500M, 2G; holes of sparse files count); default: half the free space of a tmpfs, nine tenths on disk")
}
