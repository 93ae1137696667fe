package deltabench

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/sysext/sysext/oci/ocitest"
)

// pushBlob uploads data to repo on the registry at base (POST, then PUT
// with the digest) and returns the blob's URL.
func pushBlob(t *testing.T, base, repo string, data []byte) string {
	t.Helper()
	dgst := fmt.Sprintf("sha256:%x", sha256.Sum256(data))
	resp, err := http.Post(base+"/v2/"+repo+"/blobs/uploads/", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("start upload: %s", resp.Status)
	}
	loc, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	loc, err = loc.Parse(resp.Header.Get("Location"))
	if err != nil {
		t.Fatal(err)
	}
	q := loc.Query()
	q.Set("digest", dgst)
	loc.RawQuery = q.Encode()
	req, _ := http.NewRequest(http.MethodPut, loc.String(), bytes.NewReader(data))
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("finish upload: %s", resp.Status)
	}
	return base + "/v2/" + repo + "/blobs/" + dgst
}

// TestRegistriesAnswerRange records what the delta download relies on
// from the registries the tests use: a blob GET with one Range is a 206
// with exactly those bytes and no redirect; a GET with several ranges is
// answered with a multipart/byteranges 206 holding each range (so a
// client may batch ranges there, but must also accept a 200 with the
// whole blob from registries that ignore Range).
func TestRegistriesAnswerRange(t *testing.T) {
	data := randomBytes(1<<20, 5)
	for _, reg := range []struct {
		name  string
		start func(testing.TB) *ocitest.Registry
	}{
		{"olareg", func(t testing.TB) *ocitest.Registry { return ocitest.NewOlareg(t) }},
		{"distribution", ocitest.StartDistribution},
	} {
		t.Run(reg.name, func(t *testing.T) {
			r := reg.start(t)
			blob := pushBlob(t, r.URL, "delta/range", data)
			client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
			get := func(rng string) (*http.Response, []byte) {
				req, _ := http.NewRequest(http.MethodGet, blob, nil)
				req.Header.Set("Range", rng)
				resp, err := client.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				body, err := io.ReadAll(resp.Body)
				if err != nil {
					t.Fatal(err)
				}
				return resp, body
			}

			resp, body := get("bytes=1000-1999")
			if resp.StatusCode != http.StatusPartialContent || !bytes.Equal(body, data[1000:2000]) {
				t.Fatalf("single range: %s, %d bytes", resp.Status, len(body))
			}
			if cr := resp.Header.Get("Content-Range"); cr != fmt.Sprintf("bytes 1000-1999/%d", len(data)) {
				t.Errorf("single range: Content-Range %q", cr)
			}

			resp, body = get("bytes=10-19,5000-5099,900000-900009")
			mt, params, err := mime.ParseMediaType(resp.Header.Get("Content-Type"))
			if resp.StatusCode != http.StatusPartialContent || err != nil || mt != "multipart/byteranges" {
				t.Fatalf("three ranges: %s, Content-Type %q, %d bytes", resp.Status, resp.Header.Get("Content-Type"), len(body))
			}
			mr := multipart.NewReader(bytes.NewReader(body), params["boundary"])
			var parts []string
			for {
				p, err := mr.NextPart()
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				b, _ := io.ReadAll(p)
				var from, to int
				if _, err := fmt.Sscanf(p.Header.Get("Content-Range"), "bytes %d-%d/", &from, &to); err != nil || !bytes.Equal(b, data[from:to+1]) {
					t.Fatalf("part %q: %d bytes, not the blob's", p.Header.Get("Content-Range"), len(b))
				}
				parts = append(parts, p.Header.Get("Content-Range"))
			}
			if len(parts) != 3 {
				t.Fatalf("three ranges answered with %d parts: %s", len(parts), strings.Join(parts, ", "))
			}

			resp, _ = get(fmt.Sprintf("bytes=%d-", len(data)+10))
			if resp.StatusCode != http.StatusRequestedRangeNotSatisfiable {
				t.Errorf("range past the end: %s", resp.Status)
			}
		})
	}
}
