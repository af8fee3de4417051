#!/usr/bin/env bash
# The demo: installs what is missing (as tests/run.sh does), builds the workspace and the
# static demo app, then runs the demo binary (tests/src/bin/demo.rs): a registry,
# HAProxy, a controller and four agents on this machine, the demo app at v1 on every
# host, and `drover deploy --version v2` with its live progress here while HTTP load goes
# through HAProxy. It ends with a summary (requests during the deploy, failures, which
# version every host serves) and removes everything it started, also on Ctrl-C.
#
#   bash tests/demo.sh        # exit code 0 = the deploy succeeded and no request failed
#
# Needs a Linux machine with a running Docker engine and the Rust toolchain; uses only
# loopback addresses and the containers it creates.
set -euo pipefail

cd "$(dirname "$0")/.."

# --- system packages, Docker engine, cargo (shared with tests/run.sh) -------------
. tests/setup.sh

# --- build -----------------------------------------------------------------------
say "building the workspace"
cargo build --workspace --bins
say "building the static demo app"
RUSTFLAGS='-C target-feature=+crt-static' \
    cargo build --release -p drover-demo-app --target x86_64-unknown-linux-gnu

# --- run -------------------------------------------------------------------------
bin_dir="${CARGO_TARGET_DIR:-target}/debug"
[ -x "$bin_dir/demo" ] || die "$bin_dir/demo is missing after the build"
export DROVER_BIN_DIR="${DROVER_BIN_DIR:-$(cd "$bin_dir" && pwd)}"
say "running the demo"
exec "$bin_dir/demo" "$@"
