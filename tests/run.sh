#!/usr/bin/env bash
# The test command: installs what the end-to-end tests need on a Debian machine with
# Docker (only what is missing), builds the workspace and the static demo app, then runs
# every test of the workspace (unit tests included) and exits with the suite's status.
#
#   tests/run.sh                 # everything
#   tests/run.sh -E 'test(swap)' # extra arguments go to the test runner
set -euo pipefail

cd "$(dirname "$0")/.."

say() { printf '==> %s\n' "$*"; }
die() { printf 'tests/run.sh: %s\n' "$*" >&2; exit 1; }

# --- system packages: registry, htpasswd, HAProxy --------------------------------
missing=()
[ -x /usr/bin/docker-registry ] || missing+=(docker-registry)
command -v htpasswd >/dev/null 2>&1 || missing+=(apache2-utils)
command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] || missing+=(haproxy)
if [ ${#missing[@]} -gt 0 ]; then
    say "installing ${missing[*]}"
    command -v apt-get >/dev/null 2>&1 || die "missing ${missing[*]} and no apt-get to install them: install them by hand"
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null 2>&1 || die "missing ${missing[*]}: run as root or install sudo"
        sudo="sudo"
    fi
    $sudo apt-get update -qq || die "apt-get update failed: cannot install ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq haproxy docker-registry apache2-utils \
        || die "apt-get install haproxy docker-registry apache2-utils failed"
fi

# --- Docker engine ---------------------------------------------------------------
command -v docker >/dev/null 2>&1 || die "the docker CLI is missing: install Docker Engine first"
docker info >/dev/null 2>&1 \
    || die "the Docker engine is unreachable ('docker info' fails): start it (systemctl start docker) or check DOCKER_HOST and your permissions"

# --- build -----------------------------------------------------------------------
command -v cargo >/dev/null 2>&1 || die "cargo is missing: install the Rust toolchain (rustup) first"
say "building the workspace"
cargo build --workspace --bins
say "building the static demo app"
RUSTFLAGS='-C target-feature=+crt-static' \
    cargo build --release -p drover-demo-app --target x86_64-unknown-linux-gnu

# --- test ------------------------------------------------------------------------
# 2 cores: a few tests at once; most of their time is spent waiting on Docker.
threads="${DROVER_TEST_THREADS:-4}"
if cargo nextest --version >/dev/null 2>&1; then
    say "running the suite with cargo nextest ($threads at a time)"
    exec cargo nextest run --workspace --test-threads "$threads" --no-fail-fast "$@"
else
    say "running the suite with cargo test ($threads at a time; cargo-nextest not found)"
    exec cargo test --workspace --no-fail-fast "$@" -- --test-threads "$threads"
fi
