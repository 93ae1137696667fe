#!/usr/bin/env bash
# The whole node loop on one machine, changing nothing on the host:
#   build two versions -> push signed to an OCI layout (the embedded default,
#   no server) -> pull into a node root -> merge and run -> the tag moves ->
#   update -> merge and run -> rollback -> merge and run.
# The node root is a temp directory; merging happens with the host's
# systemd-sysext inside a private mount namespace with the root's /var bound
# over /var (where the activation links point). Needs root for the merge.
set -euo pipefail
cd "$(dirname "$0")/.."

SYSEXT=${SYSEXT:-./bin/sysext}
NAME=node-hello
export COSIGN_PASSWORD=${COSIGN_PASSWORD:-demo}

# Bold step titles only on a terminal, and not with NO_COLOR set
# (https://no-color.org): logs and pipes get plain text.
bold='' plain=''
if [ -t 1 ] && [ -z "${NO_COLOR:-}" ]; then bold=$(printf '\033[1m') plain=$(printf '\033[0m'); fi
step() { printf '\n%s==> %s%s\n' "$bold" "$*" "$plain"; }
run() { printf '$ %s\n' "$*"; "$@"; }

if [ ! -x "$SYSEXT" ]; then
	echo "node-demo: $SYSEXT is missing: run 'make build' first" >&2
	exit 1
fi
work=$(mktemp -d "${TMPDIR:-/tmp}/sysext-node-demo.XXXXXX")
trap 'rm -rf "$work"' EXIT
SYSEXT=$(realpath "$SYSEXT")
cd "$work"

step "1. Build $NAME 1.0 and 2.0"
for v in 1.0 2.0; do
	mkdir -p "tree-$v/usr/bin"
	printf '#!/bin/sh\necho "%s %s"\n' "$NAME" "$v" >"tree-$v/usr/bin/$NAME"
	chmod 0755 "tree-$v/usr/bin/$NAME"
	run "$SYSEXT" build "tree-$v" --name "$NAME" --version "$v" --output . >/dev/null
done

step "2. A key pair, and 1.0 pushed and signed to an OCI layout"
run "$SYSEXT" generate-key-pair >/dev/null
ref="oci:$work/registry:stable"
run "$SYSEXT" push "$NAME"-1.0-*.raw "$ref" -q
run "$SYSEXT" sign "$ref" --key cosign.key -q

# A node root: an OS tree with an os-release (here: the host's).
mkdir -p node/etc
cp /etc/os-release node/etc/os-release

merge_and_run() {
	if [ "$(id -u)" != 0 ] || ! command -v unshare >/dev/null || ! command -v systemd-sysext >/dev/null; then
		echo "(merge skipped: needs root, unshare and systemd-sysext)"
		return 0
	fi
	unshare -m --propagation private env NODE="$work/node" NAME="$NAME" WANT="$1" sh -euc '
		mount --make-rshared /
		mount -t tmpfs tmpfs /run
		mount --bind "$NODE/var" /var
		systemd-sysext merge >/dev/null
		out=$("$NAME")
		echo "$ $NAME        # from the merged /usr: $out"
		[ "$out" = "$NAME $WANT" ] || { echo "node-demo: FAILED: want $NAME $WANT" >&2; exit 1; }'
}

step "3. Pull it into the node: resolve, verify, check, store, link"
run "$SYSEXT" pull "$ref" --root node --key cosign.pub
merge_and_run 1.0

step "4. The tag moves to a signed 2.0: update"
run "$SYSEXT" push "$NAME"-2.0-*.raw "$ref" -q
run "$SYSEXT" sign "$ref" --key cosign.key -q
run "$SYSEXT" update --all --root node
merge_and_run 2.0

step "5. Roll back"
run "$SYSEXT" rollback "$NAME" --root node
merge_and_run 1.0
run "$SYSEXT" list --root node
echo "node-demo: OK"
