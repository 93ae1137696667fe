#!/usr/bin/env bash
# The whole node loop on one machine, changing nothing on the host:
#   build two versions -> push signed to an OCI layout (the embedded default,
#   no server) -> pull into a node root -> merge and run -> the tag moves ->
#   update -> merge and run -> rollback -> merge and run; then the chain of
#   trust for a signed disk image: build a DDI whose verity root hash is
#   signed -> push it with cosign -> pull into a second node root, which
#   checks both signatures and installs the certificate and image policy ->
#   what a tampered or foreign-signed image gets -> what this host enforces.
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

step "6. A signed disk image: one chain from the publisher's keys to the kernel"
if ! command -v veritysetup >/dev/null && ! command -v systemd-repart >/dev/null; then
	echo "(skipped: building a disk image needs veritysetup (cryptsetup-bin) or systemd-repart 257+)"
	echo "node-demo: OK"
	exit 0
fi
DDI=ddi-hello
mkdir -p "tree-ddi/usr/bin"
printf '#!/bin/sh\necho "%s 1.0"\n' "$DDI" >"tree-ddi/usr/bin/$DDI"
chmod 0755 "tree-ddi/usr/bin/$DDI"
mkdir -p "tree-ddi/usr/share/$DDI"
head -c 1048576 /dev/urandom >"tree-ddi/usr/share/$DDI/data" # a tree of two levels
echo "# The verity signing key and its X.509 certificate (the cosign key signs the manifest)"
run "$SYSEXT" generate-key-pair --x509 --subject "node-demo publisher"
run "$SYSEXT" build tree-ddi --name "$DDI" --version 1.0 --format ddi \
	--sign-key verity.key --certificate verity.crt --output .
run "$SYSEXT" inspect "$DDI"-1.0-*.raw
ddiref="oci:$work/registry:$DDI"
echo "# Push: the manifest carries the root hash and the signer's fingerprint; cosign signs it"
run "$SYSEXT" push "$DDI"-1.0-*.raw "$ddiref" -q
run "$SYSEXT" sign "$ddiref" --key cosign.key -q
run "$SYSEXT" inspect "$ddiref"

# A second node root, for an OS with systemd 257 (as Debian 13): only disk
# images signed by our certificate live there, so the image policy is set.
mkdir -p node-ddi/etc node-ddi/usr/lib/systemd
cp /etc/os-release node-ddi/etc/os-release
touch node-ddi/usr/lib/systemd/libsystemd-shared-257.so
echo "# Pull: cosign signature, annotations, hash tree against the data, verity signature"
echo "# against the certificate the node trusts; then certificate and image policy for systemd"
run "$SYSEXT" pull "$ddiref" --root node-ddi --key cosign.pub --verity-certificate verity.crt
run ls node-ddi/etc/verity.d
run cat node-ddi/etc/systemd/sysext.conf.d/50-sysext-signed-images.conf \
	node-ddi/etc/systemd/system/systemd-sysext.service.d/50-sysext-signed-images.conf
run "$SYSEXT" status --root node-ddi || true

echo "# A byte changed in the image's data: the publisher cannot even push it"
cp "$DDI"-1.0-*.raw tampered.raw
printf 'X' | dd of=tampered.raw bs=1 seek=$((20480 + 524288)) conv=notrunc status=none
if "$SYSEXT" push tampered.raw "oci:$work/registry:tampered" -q 2>err.txt; then
	echo "node-demo: FAILED: a tampered disk image was pushed" >&2; exit 1
fi
sed 's/^/  refused: /' err.txt
echo "# An image signed with another verity key, cosign-signed all the same: the node refuses it"
mkdir -p other
(cd other && "$SYSEXT" generate-key-pair --x509 --subject "someone else" >/dev/null)
"$SYSEXT" build tree-ddi --name "$DDI" --version 1.0 --format ddi --force \
	--sign-key other/verity.key --certificate other/verity.crt --output other/ >/dev/null
"$SYSEXT" push other/"$DDI"-1.0-*.raw "oci:$work/registry:other" -q >/dev/null
"$SYSEXT" sign "oci:$work/registry:other" --key cosign.key -q >/dev/null
if "$SYSEXT" pull "oci:$work/registry:other" --root node-ddi --key cosign.pub --verity-certificate verity.crt 2>err.txt; then
	echo "node-demo: FAILED: an image signed by a foreign certificate was pulled" >&2; exit 1
fi
sed 's/^/  refused: /' err.txt

echo "# What this host's kernel and systemd can enforce for it:"
run "$SYSEXT" check --preflight --root / "$DDI"-1.0-*.raw || true
echo "node-demo: OK"
