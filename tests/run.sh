#!/usr/bin/env bash
# The test command: installs what the end-to-end tests need on a Debian machine with
# Docker (only what is missing: HAProxy, the registry, htpasswd, Chromium and
# chromedriver for the browser tests, PostgreSQL's binaries for the throwaway clusters
# of the store and replica tests, a Python venv with
# grpcio from PyPI for the independent operator-API client, and a minimal Debian root
# filesystem made once with debootstrap for the package tests), builds the workspace, the
# static demo app and the packages, then runs every test of the workspace (unit tests
# included) and exits with the suite's status.
#
#   tests/run.sh                 # everything
#   tests/run.sh -E 'test(swap)' # extra arguments go to the test runner
set -euo pipefail

cd "$(dirname "$0")/.."

# --- system packages, Docker engine, cargo, Python grpcio (shared with tests/demo.sh)
DROVER_SETUP_PYTHON=1
DROVER_SETUP_ROOTFS=1
. tests/setup.sh

# --- build -----------------------------------------------------------------------
say "building the workspace"
cargo build --workspace --bins
say "building the static demo app"
RUSTFLAGS='-C target-feature=+crt-static' \
    cargo build --release -p drover-demo-app --target x86_64-unknown-linux-gnu
say "building the packages (static release binaries, .deb, tarball)"
bash deploy/package.sh

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
