#!/bin/sh
# Installs the Debian packages sluice needs to build, test and run its demo.
# Idempotent: asks dpkg what is missing, runs `apt-get update` once, then installs only that,
# and says what it installs. Run as root (or with sudo available).
set -eu

# Build and library dependencies; each is named in docs/architecture.md with the reason for it.
PKGS="gcc libc6-dev pkg-config meson ninja-build \
libyaml-dev liblmdb-dev libxxhash-dev libjson-c-dev \
libcmocka-dev \
python3"

missing=""
for p in $PKGS; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $p"
    fi
done

if [ -z "$missing" ]; then
    echo "deps: all Debian packages present"
    exit 0
fi

SUDO=""
if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO=sudo; else
        echo "deps: missing packages:$missing" >&2
        echo "deps: run 'make deps' as root, or install them with apt-get" >&2
        exit 1
    fi
fi

echo "deps: installing:$missing"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
# shellcheck disable=SC2086
$SUDO apt-get install -y -q --no-install-recommends $missing
