#!/usr/bin/env bash
# The README's main command (make demo): the main job of sysext end to end
# on an embedded default, changing nothing on the host.
#   1. build the example extension in testdata/example into an image
#   2. inspect the image (metadata, digest, would it merge here?)
#   3. as root: merge it with the host's systemd-sysext inside a private
#      mount namespace and run its program from the merged /usr
# Everything is written to a temp directory that is removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

SYSEXT=${SYSEXT:-./bin/sysext}
FORMAT=${FORMAT:-squashfs}
NAME=sysext-hello
VERSION=1.0

# Bold step titles only on a terminal, and not with NO_COLOR set
# (https://no-color.org): logs and pipes get plain text.
bold='' plain=''
if [ -t 1 ] && [ -z "${NO_COLOR:-}" ]; then bold=$(printf '\033[1m') plain=$(printf '\033[0m'); fi
step() { printf '\n%s==> %s%s\n' "$bold" "$*" "$plain"; }
run() { printf '$ %s\n' "$*"; "$@"; }

if [ ! -x "$SYSEXT" ]; then
	echo "demo: $SYSEXT is missing: run 'make build' first (make demo does)" >&2
	exit 1
fi
work=$(mktemp -d "${TMPDIR:-/tmp}/sysext-demo.XXXXXX")
trap 'rm -rf "$work"' EXIT

step "1. Build the example extension (testdata/example) as a $FORMAT image"
run "$SYSEXT" build testdata/example --name "$NAME" --version "$VERSION" \
	--format "$FORMAT" --enable sysext-hello.service --output "$work/"
image=$(ls "$work"/"$NAME"-"$VERSION"-*.raw)

step "2. Inspect it: metadata read from the image without mounting it"
run "$SYSEXT" inspect "$image"

step "3. Merge it with systemd-sysext and run its program"
if [ "$(id -u)" != 0 ]; then
	echo "skipped: merging needs root (sudo make demo)"
	exit 0
fi
if ! command -v systemd-sysext >/dev/null || ! command -v unshare >/dev/null; then
	echo "skipped: systemd-sysext or unshare is not installed"
	exit 0
fi
echo "In a private mount namespace (nothing reaches the host): a tmpfs on /run,"
echo "the image linked as /run/extensions/$NAME.raw (systemd wants the file named"
echo "after extension-release.NAME), then systemd-sysext merge."
# The namespace is private first and shared inside, or the overlay that
# systemd-sysext mounts from its helper does not reach this shell.
unshare -m --propagation private env IMAGE="$image" NAME="$NAME" sh -euc '
	mount --make-rshared /
	mount -t tmpfs tmpfs /run
	mkdir -p /run/extensions
	ln -s "$IMAGE" "/run/extensions/$NAME.raw"
	echo "$ systemd-sysext merge"
	systemd-sysext merge
	echo "$ systemd-sysext status"
	systemd-sysext status
	echo "$ sysext-hello        # runs from the merged /usr"
	out=$(sysext-hello)
	echo "$out"
	case "$out" in
	*"the sysext example extension"*) echo "demo: OK, the extension is merged and its program runs" ;;
	*) echo "demo: FAILED: the program did not run from the merged /usr" >&2; exit 1 ;;
	esac'
echo "Back outside the namespace: the host's /usr is unchanged:"
if command -v sysext-hello >/dev/null; then
	echo "demo: FAILED: sysext-hello is visible on the host" >&2
	exit 1
fi
echo "  sysext-hello: not found (as it should be)"
