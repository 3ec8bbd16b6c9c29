#!/usr/bin/env bash
# A local stand-in for the official Node 20 slim image, for machines that reach no container
# registry (the deploy tests; an air-gapped build host). It is Debian bookworm minbase (mmdebstrap,
# from the Debian mirror) plus this machine's own node and npm, laid out as the official image lays
# them out (/usr/local/bin/node, /usr/local/lib/node_modules/npm, /usr/local/include/node), and
# imported as a podman image:
#
#   deploy/scripts/local-base.sh [IMAGE]            # default localhost/aog-base:node20
#   podman build --isolation chroot --build-arg BASE=localhost/aog-base:node20 -f deploy/Containerfile .
#
# The machine's CA bundle goes in too, with a global npmrc naming it, so that npm inside the build
# trusts what this machine's npm trusts (a TLS-inspecting proxy's CA, say). Nothing is done when the
# image exists already (AOG_BASE_REBUILD=1 rebuilds it).
set -euo pipefail
image=${1:-localhost/aog-base:node20}
if [ "${AOG_BASE_REBUILD:-0}" != 1 ] && podman image exists "$image"; then
  echo "local-base.sh: $image exists" >&2
  exit 0
fi
for t in mmdebstrap podman node npm; do
  command -v "$t" >/dev/null || { echo "local-base.sh: $t is required" >&2; exit 1; }
done
node=$(readlink -f "$(command -v node)")
npm_dir=$(dirname "$(dirname "$(readlink -f "$(command -v npm)")")")  # …/node_modules/npm
prefix=$(dirname "$(dirname "$node")")                                # /usr or /usr/local
headers=$prefix/include/node
[ -f "$headers/node_api.h" ] || { echo "local-base.sh: no node headers in $headers (node-gyp needs them)" >&2; exit 1; }
ca=${AOG_BASE_CA:-/etc/ssl/certs/ca-certificates.crt}
version=$("$node" --version)

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
t0=$(date +%s)
# minbase: dpkg, apt and the essential set, as the official slim image has; apt lists are removed
# at the end, as there, so a build's apt-get update is its own.
mmdebstrap --quiet --variant=minbase \
  --customize-hook='mkdir -p "$1/usr/local/lib/node_modules/npm" "$1/usr/local/include/node" "$1/usr/local/etc"' \
  --customize-hook="copy-in $node /usr/local/bin" \
  --customize-hook="sync-in $npm_dir /usr/local/lib/node_modules/npm" \
  --customize-hook="sync-in $headers /usr/local/include/node" \
  --customize-hook='ln -s ../lib/node_modules/npm/bin/npm-cli.js "$1/usr/local/bin/npm"' \
  --customize-hook='ln -s ../lib/node_modules/npm/bin/npx-cli.js "$1/usr/local/bin/npx"' \
  --customize-hook="mkdir -p \"\$1/etc/ssl/certs\" && cp $ca \"\$1/etc/ssl/certs/ca-certificates.crt\"" \
  --customize-hook='printf "cafile=/etc/ssl/certs/ca-certificates.crt\nfund=false\naudit=false\nupdate-notifier=false\n" > "$1/usr/local/etc/npmrc"' \
  --customize-hook='rm -rf "$1/var/lib/apt/lists/"*' \
  bookworm "$work/rootfs.tar"
echo "local-base.sh: rootfs in $(( $(date +%s) - t0 )) s" >&2
podman import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change "ENV NODE_VERSION=${version#v}" \
  --change 'CMD ["node"]' \
  --message "Debian bookworm minbase + node $version of $(hostname)" \
  "$work/rootfs.tar" "$image" >/dev/null
echo "local-base.sh: $image (node $version) in $(( $(date +%s) - t0 )) s" >&2
