# sysext — build, test and benchmark. `make test` installs what the tests
# need (Debian packages, and test peers built with the Go toolchain and
# cached in $(TOOLS_DIR)), then runs every test.
SHELL := /bin/bash
GO ?= go
TOOLS_DIR ?= $(HOME)/.cache/sysext/tools
export PATH := $(TOOLS_DIR):$(PATH)
# A build or test never rewrites go.mod or go.sum: what they need is
# committed (go mod tidy is a change of its own).
export GOFLAGS ?= -mod=readonly
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION)
PREFIX ?= /usr/local
MANDIR ?= $(PREFIX)/share/man
DESTDIR ?=
# Manual pages carry this date, so the same commit gives the same pages.
SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct 2>/dev/null || echo 0)

# Debian packages the tests use, by the command that shows each is there.
APT_CMDS := mksquashfs:squashfs-tools unsquashfs:squashfs-tools mkfs.erofs:erofs-utils \
	fsck.erofs:erofs-utils patchelf:patchelf bwrap:bubblewrap musl-gcc:musl-tools \
	debootstrap:debootstrap /usr/bin/time:time getcap:libcap2-bin man:man-db veritysetup:cryptsetup-bin openssl:openssl \
	nginx:nginx systemd-analyze:systemd

# Test peers built from source with the Go toolchain (nothing downloads a binary).
REGISTRY_VERSION := v3.1.2
COSIGN2_VERSION := v2.6.5
COSIGN3_VERSION := v3.1.3
ORAS_VERSION := v1.3.3
CRANE_VERSION := v0.22.1
BUTANE_VERSION := v0.23.0

.PHONY: all build man completions test test-deps apt-deps tools bench fuzz demo node-demo install lint fmt clean

all: build

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/sysext ./cmd/sysext

apt-deps:
	@missing=""; for pair in $(APT_CMDS); do cmd=$${pair%%:*}; pkg=$${pair##*:}; \
	  command -v $$cmd >/dev/null 2>&1 || missing="$$missing $$pkg"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  if [ "$$(id -u)" != 0 ]; then echo "run as root to install:$$missing" >&2; exit 1; fi; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

$(TOOLS_DIR)/registry:
	mkdir -p $(TOOLS_DIR)
	GOFLAGS= GOBIN=$(TOOLS_DIR) $(GO) install github.com/distribution/distribution/v3/cmd/registry@$(REGISTRY_VERSION)

$(TOOLS_DIR)/cosign:
	mkdir -p $(TOOLS_DIR)
	GOFLAGS= GOBIN=$(TOOLS_DIR) $(GO) install github.com/sigstore/cosign/v2/cmd/cosign@$(COSIGN2_VERSION)

$(TOOLS_DIR)/cosign3:
	mkdir -p $(TOOLS_DIR)/.cosign3
	GOFLAGS= GOBIN=$(TOOLS_DIR)/.cosign3 $(GO) install github.com/sigstore/cosign/v3/cmd/cosign@$(COSIGN3_VERSION)
	mv $(TOOLS_DIR)/.cosign3/cosign $@

# The proxy refuses the ORAS CLI's version list, so fetch the exact module and
# build it inside the module cache.
$(TOOLS_DIR)/oras:
	mkdir -p $(TOOLS_DIR)
	dir=$$(GOFLAGS= $(GO) mod download -json oras.land/oras@$(ORAS_VERSION) | sed -n 's/.*"Dir": "\(.*\)",/\1/p'); \
	cd $$dir && GOFLAGS=-mod=mod $(GO) build -o $@ ./cmd/oras

$(TOOLS_DIR)/crane:
	mkdir -p $(TOOLS_DIR)
	GOFLAGS= GOBIN=$(TOOLS_DIR) $(GO) install github.com/google/go-containerregistry/cmd/crane@$(CRANE_VERSION)

# Butane checks the snippets 'sysext butane' prints; like ORAS, the proxy
# refuses its version list.
$(TOOLS_DIR)/butane:
	mkdir -p $(TOOLS_DIR)
	dir=$$(GOFLAGS= $(GO) mod download -json github.com/coreos/butane@$(BUTANE_VERSION) | sed -n 's/.*"Dir": "\(.*\)",/\1/p'); \
	cd $$dir && GOFLAGS=-mod=mod $(GO) build -o $@ ./internal

# A Debian 13 tree (systemd 257) for what Debian 12 lacks or has too old:
# systemd-sysupdate, and systemd-repart, systemd-sysext and systemd-dissect
# 257 with the filesystem and verity tools repart runs (disk image tests).
# The stamp names the package list: a tree made with fewer packages gets the
# missing ones installed into it (no second debootstrap), and a second run
# does nothing.
empty :=
space := $(empty) $(empty)
comma := ,
TRIXIE := $(TOOLS_DIR)/trixie-sysupdate
TRIXIE_PKGS := systemd-container dbus systemd-repart erofs-utils squashfs-tools cryptsetup-bin
TRIXIE_STAMP := $(TRIXIE)/.sysext-packages-$(shell echo $(TRIXIE_PKGS) | sha256sum | cut -c1-12)
TRIXIE_LOADER = exec "$$R/usr/lib64/ld-linux-x86-64.so.2" --library-path "$$R/usr/lib/x86_64-linux-gnu:$$R/usr/lib/x86_64-linux-gnu/systemd"

$(TRIXIE_STAMP):
	mkdir -p $(TOOLS_DIR)
	if [ ! -x $(TRIXIE)/usr/bin/systemd-sysext ]; then \
	  rm -rf $(TRIXIE) && \
	  debootstrap --variant=minbase --include=$(subst $(space),$(comma),$(TRIXIE_PKGS)) trixie $(TRIXIE) >/dev/null; \
	else \
	  missing=$$(for p in $(TRIXIE_PKGS); do chroot $(TRIXIE) dpkg -s $$p >/dev/null 2>&1 || echo $$p; done | tr "\n" " "); \
	  if [ -n "$$missing" ]; then \
	    cp /etc/resolv.conf $(TRIXIE)/etc/resolv.conf && \
	    MISSING="$$missing" unshare -m sh -c 'mount -t proc proc $(TRIXIE)/proc && chroot $(TRIXIE) sh -c "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$MISSING"' >/dev/null; \
	  fi; \
	fi
	touch $@

$(TOOLS_DIR)/systemd-sysupdate: $(TRIXIE_STAMP)
	printf '#!/bin/sh\nR=%s\n$(TRIXIE_LOADER) "$$R/usr/lib/systemd/systemd-sysupdate" "$$@"\n' $(TRIXIE) > $@.tmp
	chmod +x $@.tmp && $@.tmp --version >/dev/null && mv $@.tmp $@

# Wrappers that run the tree's programs on this host: put the directory
# first on PATH to build as a host with systemd-repart 257 does. Not on
# PATH by default, so nothing else picks them up. erofs-utils 1.8's three
# tools write and read lzma, deflate and zstd EROFS images (Debian 12's
# 1.5 has lz4 only). The stamp names the list, so a new program is added.
TRIXIE_BIN_PROGRAMS := usr/bin/systemd-repart usr/bin/systemd-dissect usr/bin/mkfs.erofs usr/bin/dump.erofs usr/bin/fsck.erofs usr/bin/mksquashfs usr/sbin/veritysetup
TRIXIE_BIN_STAMP := $(TOOLS_DIR)/trixie-bin/.done-$(shell echo $(TRIXIE_BIN_PROGRAMS) | sha256sum | cut -c1-12)
$(TRIXIE_BIN_STAMP): $(TRIXIE_STAMP)
	mkdir -p $(TOOLS_DIR)/trixie-bin
	for p in $(TRIXIE_BIN_PROGRAMS); do \
	  printf '#!/bin/sh\nR=%s\n$(TRIXIE_LOADER) "$$R/%s" "$$@"\n' $(TRIXIE) $$p > $(TOOLS_DIR)/trixie-bin/$$(basename $$p) && \
	  chmod +x $(TOOLS_DIR)/trixie-bin/$$(basename $$p) || exit 1; \
	done
	$(TOOLS_DIR)/trixie-bin/systemd-repart --version >/dev/null
	$(TOOLS_DIR)/trixie-bin/mkfs.erofs -V | grep -q zstd
	touch $@

tools: $(TOOLS_DIR)/registry $(TOOLS_DIR)/cosign $(TOOLS_DIR)/cosign3 $(TOOLS_DIR)/oras $(TOOLS_DIR)/crane $(TOOLS_DIR)/systemd-sysupdate $(TOOLS_DIR)/butane $(TRIXIE_BIN_STAMP)

test-deps: apt-deps tools

# The packages whose own code runs goroutines (oci's download pipeline, the
# ingest flusher, the builder's parallel jobs, flix's pipes, fsimage's reader
# guards, internal/tool's command plumbing) and those they call from them
# are tested under the race detector; the rest without, since -race costs
# most where there is least to find (node, cmd/sysext, verify: 3 to 7 times
# slower, goroutines only in tests or the signal handler). What this costs
# and saves: docs/testing.md.
RACE_PKGS := atomicfile builder flix fsimage ingest internal oci
MODULE := $(shell $(GO) list -m 2>/dev/null)
RACE_RE := ^$(MODULE)/($(subst $(eval) ,|,$(strip $(RACE_PKGS))))(/|$$)

test: test-deps
	$(GO) vet ./...
	$(GO) test -count=1 -timeout 40m $$($(GO) list ./... | grep -vE '$(RACE_RE)')
	$(GO) test -race -count=1 -timeout 40m $(RACE_PKGS:%=./%/...)
	$(MAKE) fuzz

# Every Fuzz* function of these packages (image readers, manifest,
# reference, release, policy, state, ingest record and chunk index parsers)
# fuzzes for FUZZTIME, after `go test` ran its checked-in corpus
# (testdata/fuzz/); a new target is picked up by its name.
# Each package's fuzzing binary is built once and run per target. A run
# that fails only with Go's own "context deadline exceeded" at the end of
# FUZZTIME (a race in the fuzzing coordinator before Go 1.27) and wrote no
# failing input is run once more; any other failure fails.
FUZZ_PKGS := fsimage oci extension verify store ingest delta
FUZZTIME ?= 3s
fuzz:
	@set -eo pipefail; mkdir -p bin/fuzz; cache=$$($(GO) env GOCACHE)/fuzz; \
	for pkg in $(FUZZ_PKGS); do \
	  $(GO) test -c -fuzz=. -o bin/fuzz/$$pkg.test ./$$pkg; \
	  importpath=$$($(GO) list ./$$pkg); \
	  for target in $$(sed -n 's/^func \(Fuzz[A-Za-z0-9_]*\)(.*/\1/p' $$pkg/*_test.go); do \
	    echo "fuzz $$pkg $$target ($(FUZZTIME))"; \
	    for try in 1 2; do \
	      if (cd $$pkg && ../bin/fuzz/$$pkg.test -test.run='^$$' -test.fuzz="^$$target\$$" \
	        -test.fuzztime=$(FUZZTIME) -test.fuzzcachedir=$$cache/$$importpath) > bin/fuzz/out 2>&1; then \
	        awk '/^fuzz: elapsed/ { last = $$0; next } { print } END { if (last) print last }' bin/fuzz/out; break; \
	      fi; \
	      cat bin/fuzz/out; \
	      if [ $$try = 1 ] && grep -q 'context deadline exceeded' bin/fuzz/out && ! grep -q 'Failing input written\|panic:' bin/fuzz/out; then \
	        echo "fuzz $$pkg $$target: Go's fuzzing ended on its own deadline (go.dev/issue/75804, fixed in Go 1.27), no input failed: once more"; continue; \
	      fi; \
	      exit 1; \
	    done; \
	  done; \
	done

# make bench BENCH=Transfer BENCH_PKGS=./oci/ BENCHTIME=3x: one benchmark,
# more rounds. internal/deltabench's first run builds its workload (Go
# programs from the module proxy, five image variants, zstd -19 patches)
# into $XDG_CACHE_HOME/sysext/deltabench (or SYSEXT_DELTABENCH_DIR): over an
# hour on two cores; later runs take minutes.
BENCH ?= .
BENCHTIME ?= 1x
BENCH_PKGS ?= ./...
bench: test-deps
	$(GO) test -run '^$$' -bench '$(BENCH)' -benchtime $(BENCHTIME) -timeout 150m $(BENCH_PKGS)

node-demo: apt-deps build
	./scripts/node-demo.sh

# The README's main command: build, inspect and merge the example, then the
# whole node loop (push signed, pull, merge and run, update, rollback).
demo: apt-deps build
	./scripts/demo.sh
	./scripts/node-demo.sh

# sysext(1), one page per command (from the cobra definitions) and
# sysext-policy.json(5), sysext-extensions.d(5), sysext-registries.conf(5),
# by the generator built with -tags man (bin/sysext does not link it: its
# markdown stack's start-up cost would be paid on every run).
man:
	rm -rf build/man
	CGO_ENABLED=0 $(GO) build -trimpath -tags man -ldflags '$(LDFLAGS)' -o bin/sysext-man ./cmd/sysext
	SOURCE_DATE_EPOCH=$(SOURCE_DATE_EPOCH) bin/sysext-man man build/man

# cobra's completion scripts; they complete values too (formats,
# architectures, recipes, installed and declared extensions).
completions: build
	mkdir -p build/completions
	bin/sysext completion bash > build/completions/sysext.bash
	bin/sysext completion zsh > build/completions/_sysext
	bin/sysext completion fish > build/completions/sysext.fish

install: build man completions
	install -D -m 0755 bin/sysext $(DESTDIR)$(PREFIX)/bin/sysext
	install -d $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(MANDIR)/man5
	install -m 0644 build/man/man1/*.1 $(DESTDIR)$(MANDIR)/man1/
	install -m 0644 build/man/man5/*.5 $(DESTDIR)$(MANDIR)/man5/
	install -D -m 0644 build/completions/sysext.bash $(DESTDIR)$(PREFIX)/share/bash-completion/completions/sysext
	install -D -m 0644 build/completions/_sysext $(DESTDIR)$(PREFIX)/share/zsh/site-functions/_sysext
	install -D -m 0644 build/completions/sysext.fish $(DESTDIR)$(PREFIX)/share/fish/vendor_completions.d/sysext.fish
	bin/sysext install-units -q --root $(or $(DESTDIR),/) --unit-dir $(PREFIX)/lib/systemd/system --bin $(PREFIX)/bin/sysext --no-enable

fmt:
	gofmt -w $$(git ls-files '*.go')

lint:
	test -z "$$(gofmt -l $$(git ls-files '*.go'))"
	$(GO) vet ./...

clean:
	rm -rf bin build
