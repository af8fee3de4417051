#!/usr/bin/env bash
# The benchmarks (NOT part of the test suite): builds the release binaries, the static
# demo app and, when it builds, a static agent; then runs every benchmark program and
# keeps its output under target/bench/. Each benchmark prints RATIOS against a baseline
# measured in the same run, since the machine is shared and absolute times drift.
#
#   tests/bench.sh                    # agent and rollout
#   tests/bench.sh agent              # only bench_agent (or: rollout, tls, restore, watch)
#   tests/bench.sh restore            # bench_restore: a failed batch of 3 restored vs one
#                                     # host's restore (never-ready deploys, interleaved)
#   BENCH_RESTORE_ROUNDS=8 tests/bench.sh restore   # rounds of bench_restore (default 5)
#   tests/bench.sh watch              # bench_watch: a Watch stream's / checkpoint's
#                                     # store reads on a 2,000-host (SIMULATED)
#                                     # deployment, own row vs every host row
#   tests/bench.sh hooks              # bench_hooks: a no-op before_rollout hook on 10 hosts
#   tests/bench.sh dora               # bench_dora: `drover dora` on a 100,000-deployment
#                                     # history (written straight to SQLite) vs
#                                     # `drover history --limit 1`, CLI end to end and
#                                     # the controller's CPU time per call
#   BENCH_DORA_ROUNDS=15 tests/bench.sh dora   # rounds of bench_dora (default 9)
#   tests/bench.sh web                # bench_web: the web interface's Hosts and Overview
#                                     # pages rendered by drover serve with 10,000
#                                     # SIMULATED agents connected and 1,000 deployments
#                                     # (written straight to SQLite): ms per page, bytes
#   BENCH_WEB_ROUNDS=40 tests/bench.sh web     # rounds of bench_web (default 20)
#   tests/bench.sh tls                # the cost of mTLS: bench_rollout --tls-cost (the
#                                     # 10-host deploy over mTLS vs --insecure-dev,
#                                     # interleaved) and bench_handshake (1,000 SIMULATED
#                                     # agents connecting at once, mTLS vs plaintext)
#   tests/bench.sh scale              # bench_scale: 10,000 agents (the REAL agent code
#                                     # on a SIMULATED container engine, in 10
#                                     # processes) against one drover serve over mTLS:
#                                     # enroll, reconnect storms, RSS, two deploys in
#                                     # 10% batches (CPU per host), a fan-out to all
#   BENCH_SCALE_AGENTS=2000 tests/bench.sh scale   # fewer agents (default 10000)
#   tests/bench.sh failover           # bench_failover: SIGKILL of the controller while a
#                                     # host swaps, to the deployment's next host action:
#                                     # 3 replicas on PostgreSQL (3 s lease) vs one
#                                     # controller on SQLite restarted at once
#   BENCH_FAILOVER_ROUNDS=5 tests/bench.sh failover   # rounds (default 3)
#   tests/bench.sh store              # bench_store: the store's rollout workload on
#                                     # SQLite and on PostgreSQL (a throwaway cluster on
#                                     # a Unix socket): writes per second, ratio
#   BENCH_ROUNDS=20 tests/bench.sh    # more swap rounds in bench_agent
#   BENCH_REPEAT=3 tests/bench.sh     # repeat bench_rollout's comparisons (medians)
#   BENCH_TLS_REPEAT=8 tests/bench.sh tls   # rounds of bench_rollout --tls-cost (default 6)
#   BENCH_AGENTS=1000 BENCH_STORMS=3 tests/bench.sh tls  # bench_handshake's agents, rounds
#   BENCH_SKIP_STATIC=1 tests/bench.sh  # skip the static agent build
#
# bench_handshake needs one open file per simulated agent here and in the controller:
# this script raises the soft open-files limit (ulimit -n) to 65536, or to the hard
# limit if that is lower.
#
# Needs what tests/run.sh needs (Docker, docker-registry, htpasswd, HAProxy); run that
# once first to install them.
set -euo pipefail

cd "$(dirname "$0")/.."

say() { printf '==> %s\n' "$*"; }
die() { printf 'tests/bench.sh: %s\n' "$*" >&2; exit 1; }

[ $# -gt 0 ] || set -- agent rollout
for b in "$@"; do
    case "$b" in
        agent | rollout | tls | restore | watch | dora | hooks | web | scale | failover | store) ;;
        *) die "unknown benchmark $b (agent, rollout, tls, restore, watch, dora, hooks, web, scale, failover, store)" ;;
    esac
done

# --- prerequisites -----------------------------------------------------------------
command -v docker >/dev/null 2>&1 || die "the docker CLI is missing: install Docker Engine first"
docker info >/dev/null 2>&1 || die "the Docker engine is unreachable ('docker info' fails)"
[ -x /usr/bin/docker-registry ] || die "docker-registry is missing: run tests/run.sh once (it installs it)"
command -v htpasswd >/dev/null 2>&1 || die "htpasswd is missing: run tests/run.sh once (it installs apache2-utils)"
command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] || die "haproxy is missing: run tests/run.sh once"
command -v cargo >/dev/null 2>&1 || die "cargo is missing: install the Rust toolchain first"

target="${CARGO_TARGET_DIR:-$PWD/target}"
target_triple=x86_64-unknown-linux-gnu

# --- build -------------------------------------------------------------------------
say "building the release binaries (drover, drover-agent, the benchmarks)"
cargo build --release -p drover-agent -p drover-controller -p drover-tests --bins
say "building the static demo app"
RUSTFLAGS='-C target-feature=+crt-static' \
    cargo build --release -p drover-demo-app --target "$target_triple"

static_agent=""
needs_static=0
for b in "$@"; do [ "$b" = agent ] && needs_static=1; done
if [ "${BENCH_SKIP_STATIC:-0}" != 1 ] && [ "$needs_static" = 1 ]; then
    say "trying a static agent build (crt-static, $target_triple)"
    if RUSTFLAGS='-C target-feature=+crt-static' \
        cargo build --release -p drover-agent --target "$target_triple"; then
        static_agent="$target/$target_triple/release/drover-agent"
    else
        say "the static agent build FAILED (reported, not fatal)"
    fi
fi

export DROVER_BIN_DIR="$target/release"
export DROVER_DEMO_APP="$target/$target_triple/release/demo-app"

# --- open files: one per simulated agent (bench_handshake, bench_scale), in the controller --
# (bench_web's agents share connections: a few hundred sockets for 10,000 of them)
want_files=65536
hard_files=$(ulimit -Hn)
if [ "$hard_files" != unlimited ] && [ "$hard_files" -lt "$want_files" ]; then
    want_files=$hard_files
fi
if [ "$(ulimit -Sn)" != unlimited ] && [ "$(ulimit -Sn)" -lt "$want_files" ]; then
    ulimit -Sn "$want_files" 2>/dev/null \
        || say "could not raise the open-files limit to $want_files (now $(ulimit -Sn))"
fi

# --- leftovers on exit, whatever happens ---------------------------------------------
# The programs clean up after themselves (also on panic and on SIGINT/SIGTERM); this
# removes what only an uncatchable kill (SIGKILL) would leave: the CLI baselines'
# containers, which carry this label.
cleanup() {
    ids=$(docker ps -aq --filter label=org.drover-bench.run 2>/dev/null || true)
    if [ -n "$ids" ]; then
        # shellcheck disable=SC2086
        docker rm -f -v $ids >/dev/null 2>&1 || true
    fi
}
trap cleanup EXIT

# --- run ---------------------------------------------------------------------------
out="$target/bench"
mkdir -p "$out"
stamp=$(date +%Y%m%d-%H%M%S)
status=0
for b in "$@"; do
    case "$b" in
        agent)
            args=(--rounds "${BENCH_ROUNDS:-10}")
            [ -n "$static_agent" ] && args+=(--static-agent "$static_agent")
            say "bench_agent ${args[*]}  (log: $out/agent-$stamp.txt)"
            "$target/release/bench_agent" "${args[@]}" 2>&1 | tee "$out/agent-$stamp.txt" \
                || status=1
            ;;
        rollout)
            # HAProxy's checks as the README suggests for a fast re-enable.
            args=(--repeat "${BENCH_REPEAT:-1}" --check-inter-ms 250 --check-timeout-ms 300)
            say "bench_rollout ${args[*]}  (log: $out/rollout-$stamp.txt)"
            "$target/release/bench_rollout" "${args[@]}" 2>&1 | tee "$out/rollout-$stamp.txt" \
                || status=1
            ;;
        restore)
            args=(--rounds "${BENCH_RESTORE_ROUNDS:-5}")
            say "bench_restore ${args[*]}  (log: $out/restore-$stamp.txt)"
            "$target/release/bench_restore" "${args[@]}" 2>&1 | tee "$out/restore-$stamp.txt" \
                || status=1
            ;;
        tls)
            args=(--tls-cost --repeat "${BENCH_TLS_REPEAT:-6}")
            say "bench_rollout ${args[*]}  (log: $out/tls-rollout-$stamp.txt)"
            "$target/release/bench_rollout" "${args[@]}" 2>&1 \
                | tee "$out/tls-rollout-$stamp.txt" || status=1
            args=(--agents "${BENCH_AGENTS:-1000}" --rounds "${BENCH_STORMS:-3}")
            say "bench_handshake ${args[*]}  (open files: $(ulimit -Sn); log: $out/tls-handshake-$stamp.txt)"
            "$target/release/bench_handshake" "${args[@]}" 2>&1 \
                | tee "$out/tls-handshake-$stamp.txt" || status=1
            ;;
        watch)
            say "bench_watch  (log: $out/watch-$stamp.txt)"
            "$target/release/bench_watch" 2>&1 | tee "$out/watch-$stamp.txt" || status=1
            ;;
        hooks)
            args=(--rounds "${BENCH_HOOKS_ROUNDS:-3}")
            say "bench_hooks ${args[*]}  (log: $out/hooks-$stamp.txt)"
            "$target/release/bench_hooks" "${args[@]}" 2>&1 | tee "$out/hooks-$stamp.txt" \
                || status=1
            ;;
        web)
            args=(--rounds "${BENCH_WEB_ROUNDS:-20}")
            say "bench_web ${args[*]}  (log: $out/web-$stamp.txt)"
            "$target/release/bench_web" "${args[@]}" 2>&1 | tee "$out/web-$stamp.txt" \
                || status=1
            ;;
        scale)
            args=(--agents "${BENCH_SCALE_AGENTS:-10000}")
            say "bench_scale ${args[*]}  (open files: $(ulimit -Sn); log: $out/scale-$stamp.txt)"
            "$target/release/bench_scale" "${args[@]}" 2>&1 | tee "$out/scale-$stamp.txt" \
                || status=1
            ;;
        failover)
            args=(--rounds "${BENCH_FAILOVER_ROUNDS:-3}")
            say "bench_failover ${args[*]}  (log: $out/failover-$stamp.txt)"
            "$target/release/bench_failover" "${args[@]}" 2>&1 \
                | tee "$out/failover-$stamp.txt" || status=1
            ;;
        store)
            say "bench_store  (log: $out/store-$stamp.txt)"
            "$target/release/bench_store" 2>&1 | tee "$out/store-$stamp.txt" || status=1
            ;;
        dora)
            args=(--rounds "${BENCH_DORA_ROUNDS:-9}")
            say "bench_dora ${args[*]}  (log: $out/dora-$stamp.txt)"
            "$target/release/bench_dora" "${args[@]}" 2>&1 | tee "$out/dora-$stamp.txt" \
                || status=1
            ;;
    esac
done
exit "$status"
