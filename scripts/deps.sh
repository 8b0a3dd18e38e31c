#!/bin/sh
# Installs the Debian packages Herald needs to build and test, if any is missing.
# Idempotent and quiet when everything is present. Run as root (or with sudo).
#   scripts/deps.sh          build + test dependencies
#   scripts/deps.sh --run    only what `make run` needs
set -eu

build="build-essential cmake pkg-config libuv1-dev node-llhttp libssl-dev
libjansson-dev libjwt-dev libsodium-dev libcurl4-openssl-dev"
test="clang libclang-rt-14-dev python3 python3-websockets python3-pytest node-ws
curl procps chromium openssl binutils"

want="$build"
[ "${1:-}" = "--run" ] || want="$build $test"

missing=""
for p in $want; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
    missing="$missing $p"
done
# Node.js may come from another source (its own npm included): check commands.
if [ "${1:-}" != "--run" ]; then
  command -v node >/dev/null 2>&1 || missing="$missing nodejs"
  command -v npm >/dev/null 2>&1 || missing="$missing npm"
fi
[ -z "$missing" ] && exit 0

echo "deps: installing$missing" >&2
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO=sudo
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >/dev/null
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
