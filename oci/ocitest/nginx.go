package ocitest

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sysext/sysext/internal/testenv"
)

// StartNginxCache starts nginx (the Debian package, `make apt-deps`) on a
// free loopback port as a caching tier in front of upstream (a registry or
// a pull-through cache): content named by a digest is kept for a week,
// everything else (tags, /v2/) for tagTTL; concurrent misses of one key
// go upstream once (proxy_cache_lock); HEADs are answered from the cached
// GET; a conditional GET is answered 304 from the cache; while upstream
// fails, what it holds is served stale. It is stopped when the test ends;
// Restart stops and starts it on the same port and cache.
func StartNginxCache(t testing.TB, upstream *Registry, tagTTL time.Duration) *Registry {
	t.Helper()
	bin := testenv.RequireTool(t, "nginx")
	dir := t.TempDir()
	// nginx keeps cached answers for whole seconds.
	ttl := fmt.Sprintf("%ds", max(int64(tagTTL.Round(time.Second)/time.Second), 1))
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		port, err := freePort()
		if err != nil {
			t.Fatal(err)
		}
		host := fmt.Sprintf("127.0.0.1:%d", port)
		up := strings.TrimPrefix(upstream.URL, "http://")
		cfg := filepath.Join(dir, "nginx.conf")
		user := ""
		if os.Geteuid() == 0 {
			user = "user root;"
		}
		conf := strings.NewReplacer("USER", user, "DIR", dir, "HOST", host, "UPSTREAM", up, "TTL", ttl).Replace(nginxConf)
		if err := os.WriteFile(cfg, []byte(conf), 0o644); err != nil {
			t.Fatal(err)
		}
		p := &process{bin: bin, cfg: cfg, log: filepath.Join(dir, "nginx.log"), url: "http://" + host,
			args: []string{"-e", filepath.Join(dir, "error.log"), "-p", dir, "-c", cfg}}
		if err := p.start(); err != nil {
			lastErr = err
			continue
		}
		t.Cleanup(p.stop)
		return &Registry{Host: host, URL: p.url, Dir: dir, Referrers: upstream.Referrers, restart: func() error {
			p.stop()
			return p.start()
		}}
	}
	t.Fatalf("nginx did not start: %v", lastErr)
	return nil
}

// The workers run as the test's user (nginx started by root would switch
// them to nobody, who cannot write the test's temp dirs). The cache key
// leaves out the method (HEAD is served from the GET) and
// keeps Accept (a tag's manifest depends on it).
const nginxConf = `daemon off;
USER
worker_processes 1;
pid DIR/nginx.pid;
error_log DIR/error.log error;
events { worker_connections 8192; }
http {
  access_log off;
  client_body_temp_path DIR/body;
  proxy_temp_path DIR/proxy;
  fastcgi_temp_path DIR/fastcgi;
  uwsgi_temp_path DIR/uwsgi;
  scgi_temp_path DIR/scgi;
  proxy_cache_path DIR/cache levels=1:2 keys_zone=registry:16m max_size=20g inactive=7d use_temp_path=off;
  upstream registry { server UPSTREAM; keepalive 32; }
  server {
    listen HOST;
    client_max_body_size 0;
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    proxy_set_header Host $http_host;
    proxy_cache registry;
    proxy_cache_key "$uri|$is_args$args|$http_accept";
    proxy_cache_methods GET HEAD;
    proxy_cache_convert_head on;
    proxy_cache_lock on;
    proxy_cache_lock_timeout 5m;
    proxy_cache_lock_age 5m;
    proxy_cache_use_stale error timeout http_429 http_500 http_502 http_503 http_504;
    proxy_ignore_headers Cache-Control Expires Set-Cookie Vary;
    proxy_read_timeout 5m;
    location ~ ^/v2/.+/(blobs|manifests)/sha256: {
      proxy_pass http://registry;
      proxy_cache_valid 200 7d;
    }
    location / {
      proxy_pass http://registry;
      proxy_cache_valid 200 404 TTL;
    }
  }
}
`
