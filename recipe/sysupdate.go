package recipe

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"github.com/sysext/sysext/atomicfile"
	"github.com/sysext/sysext/extension"
	"github.com/sysext/sysext/internal/ctxio"
)

// SysupdateOptions describe a systemd-sysupdate transfer for one
// extension's images, for users who stay on systemd-sysupdate.
type SysupdateOptions struct {
	Name         string // the extension
	ImagesDir    string // where NAME-VERSION-ARCH.raw are; SHA256SUMS is written here
	URL          string // where the images are published: an http(s) base, or a local directory (regular-file source)
	Output       string // directory for NAME.conf; "" = ImagesDir
	TargetDir    string // where sysupdate keeps versions; "" = /opt/extensions/NAME
	Link         string // the activation link; "" = /etc/extensions/NAME.raw
	InstancesMax int    // versions kept; 0 = 3
}

// SysupdateResult names what was written.
type SysupdateResult struct {
	Conf   string   // the transfer file
	Sums   string   // SHA256SUMS
	Images []string // the image file names listed in it
}

// Sysupdate writes ImagesDir/SHA256SUMS (keeping other files' lines) and
// Output/NAME.conf.
func Sysupdate(ctx context.Context, o SysupdateOptions) (*SysupdateResult, error) {
	err := extension.ValidateName(o.Name)
	if err != nil {
		return nil, err
	}
	if o.URL == "" {
		return nil, errors.New("sysupdate: no --url: say where the images will be published")
	}
	if o.ImagesDir == "" {
		o.ImagesDir = "."
	}
	if o.Output == "" {
		o.Output = o.ImagesDir
	}
	if o.TargetDir == "" {
		o.TargetDir = "/opt/extensions/" + o.Name
	}
	if o.Link == "" {
		o.Link = "/etc/extensions/" + o.Name + extension.ImageSuffix
	}
	if o.InstancesMax == 0 {
		o.InstancesMax = 3
	}
	if o.InstancesMax < 2 {
		return nil, errorf(ErrOption, "sysupdate: --instances %d: systemd-sysupdate keeps at least 2", o.InstancesMax)
	}
	// Each becomes a line of the transfer file.
	if err := extension.ValidateLinePath("sysupdate: --target-dir", o.TargetDir); err != nil {
		return nil, errorf(ErrOption, "%v", err)
	}
	if err := extension.ValidateLinePath("sysupdate: --link", o.Link); err != nil {
		return nil, errorf(ErrOption, "%v", err)
	}
	if isURL(o.URL) {
		err = extension.ValidateLineWord("sysupdate: --url", o.URL)
	} else {
		err = extension.ValidateLinePath("sysupdate: --url", o.URL)
	}
	if err != nil {
		return nil, errorf(ErrOption, "%v", err)
	}
	entries, err := os.ReadDir(o.ImagesDir)
	if err != nil {
		return nil, fmt.Errorf("sysupdate: %w", err)
	}
	var archs []string
	for _, a := range extension.Architectures() {
		archs = append(archs, regexp.QuoteMeta(string(a)))
	}
	own := regexp.MustCompile(`^` + regexp.QuoteMeta(o.Name) + `-(.+)-(` + strings.Join(archs, "|") + `)\.raw$`)
	sums := map[string]string{}
	var images []string
	for _, e := range entries {
		if !e.Type().IsRegular() || !own.MatchString(e.Name()) {
			continue
		}
		sum, err := fileSHA256(ctx, filepath.Join(o.ImagesDir, e.Name()))
		if err != nil {
			return nil, fmt.Errorf("sysupdate: %w", err)
		}
		sums[e.Name()] = sum
		images = append(images, e.Name())
	}
	if len(images) == 0 {
		return nil, fmt.Errorf("sysupdate: no %s-VERSION-ARCH.raw in %s: bake or build the images there first", o.Name, o.ImagesDir)
	}
	// Keep the lines of other files: one directory often publishes several
	// extensions under one SHA256SUMS.
	sumsPath := filepath.Join(o.ImagesDir, "SHA256SUMS")
	if old, err := os.ReadFile(sumsPath); err == nil {
		for _, line := range strings.Split(string(old), "\n") {
			f := strings.Fields(line)
			if len(f) != 2 || !hexSum().MatchString(f[0]) {
				continue
			}
			name := strings.TrimPrefix(f[1], "*")
			if _, ours := sums[name]; !ours && !own.MatchString(name) {
				sums[name] = f[0]
			}
		}
	}
	var b strings.Builder
	for _, n := range sortedKeys(sums) {
		fmt.Fprintf(&b, "%s  %s\n", sums[n], n)
	}
	if err := atomicfile.WriteFile(sumsPath, []byte(b.String()), 0o644); err != nil {
		return nil, fmt.Errorf("sysupdate: %w", err)
	}
	conf := filepath.Join(o.Output, o.Name+".conf")
	if err := atomicfile.WriteFile(conf, []byte(TransferConf(o)), 0o644); err != nil {
		return nil, fmt.Errorf("sysupdate: %w", err)
	}
	sort.Strings(images)
	return &SysupdateResult{Conf: conf, Sums: sumsPath, Images: images}, nil
}

// TransferConf renders the sysupdate.d(5) transfer file. An http(s) URL is
// a url-file source (sysupdate reads URL/SHA256SUMS); anything else is a
// local directory (regular-file source).
func TransferConf(o SysupdateOptions) string {
	srcType, path := "url-file", strings.TrimRight(o.URL, "/")+"/"
	if !isURL(o.URL) {
		srcType, path = "regular-file", o.URL
	}
	return fmt.Sprintf(`# systemd-sysupdate transfer for the %[1]s extension, written by sysext.
# Install as /etc/sysupdate.%[1]s.d/%[1]s.conf and run
#   systemd-sysupdate -C %[1]s update && systemctl restart systemd-sysext
# SHA256SUMS is not signed, hence Verify=false; 'sysext pull' checks
# signatures instead.
[Transfer]
Verify=false

[Source]
Type=%[2]s
Path=%[3]s
MatchPattern=%[1]s-@v-%%a.raw

[Target]
MatchPattern=%[1]s-@v-%%a.raw
InstancesMax=%[4]d
Type=regular-file
Path=%[5]s
CurrentSymlink=%[6]s
`, o.Name, srcType, path, o.InstancesMax, o.TargetDir, o.Link)
}

func fileSHA256(ctx context.Context, p string) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, ctxio.Reader(ctx, f)); err != nil {
		return "", fmt.Errorf("%s: %w", p, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
