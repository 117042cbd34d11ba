#!/bin/sh
# Installs the Debian packages sluice needs to build, test and run its demo.
# Idempotent: asks dpkg what is missing, runs `apt-get update` once, then installs only that,
# and says what it installs. Run as root (or with sudo available).
set -eu

# Build and library dependencies; each is named in docs/architecture.md with the reason for it.
PKGS="gcc libc6-dev pkg-config meson ninja-build \
libyaml-dev liblmdb-dev libxxhash-dev libjson-c-dev \
libcurl4-openssl-dev libxml2-dev libssl-dev \
libcmocka-dev libfuse3-dev fuse3 \
python3 nginx awscli ca-certificates \
python3-torch python3-fsspec python3-numpy python3-yaml \
slurmctld slurmd slurm-client munge"

# Node.js runs the S3 test server (s3rver) and the throttling proxy. A machine may have its
# own Node.js (nodesource, nvm): use it; otherwise Debian's.
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    PKGS="$PKGS nodejs npm"
fi
# The benchmarks also compare against rclone, s3fs and Snakemake.
if [ "${1:-}" = "--bench" ]; then
    PKGS="$PKGS rclone s3fs snakemake bc"
fi

missing=""
for p in $PKGS; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $p"
    fi
done

# npm packages go into the tree (tests/tools/node_modules), pinned by package-lock.json.
npm_deps() {
    tools="$(dirname "$0")/../tests/tools"
    if [ ! -d "$tools/node_modules" ] || [ "$tools/package-lock.json" -nt "$tools/node_modules" ]; then
        echo "deps: installing npm packages into tests/tools/node_modules (s3rver, @smithy/signature-v4, @duckdb/node-api)"
        # Not `npm ci`: it insists the lock name every platform's build of DuckDB's optional
        # engine, and a registry mirror serving only Linux's cannot lock the others.
        # `npm install` installs what the lock pins and skips optional packages it cannot get.
        (cd "$tools" && npm install --no-save --no-audit --no-fund --loglevel=error) &&
            touch "$tools/node_modules"
    else
        echo "deps: npm packages present"
    fi
}

if [ -z "$missing" ]; then
    echo "deps: all Debian packages present"
    npm_deps
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
npm_deps
