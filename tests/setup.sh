# Shared by tests/run.sh and tests/demo.sh, which source it from the workspace root:
# installs what the end-to-end tests and the demo need on a Debian machine with Docker
# (only what is missing; Chromium and chromedriver for the browser tests included), and checks that the Docker engine and cargo are usable. With
# DROVER_SETUP_PYTHON=1 (tests/run.sh) also a Python venv with grpcio, and with
# DROVER_SETUP_ROOTFS=1 (tests/run.sh) a minimal Debian root filesystem for the package
# tests.
# Defines `say` and `die` for the script that sources it.

say() { printf '==> %s\n' "$*"; }
die() { printf '%s: %s\n' "$0" "$*" >&2; exit 1; }

# --- system packages: registry, htpasswd, HAProxy, ss, the browser ----------------
# Chromium and its WebDriver come from Debian, like everything else here: the browser
# tests (tests/tests/web.rs) drive headless Chromium, and nothing downloads a browser or
# driver build of its own.
missing=()
[ -x /usr/bin/docker-registry ] || missing+=(docker-registry)
command -v htpasswd >/dev/null 2>&1 || missing+=(apache2-utils)
command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] || missing+=(haproxy)
command -v ss >/dev/null 2>&1 || missing+=(iproute2)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
# PostgreSQL's server binaries (initdb, pg_ctl, postgres): the replica tests start
# throwaway clusters of their own on private socket directories; no cluster of the
# package's own is needed (tests/tests/ha.rs, the store's PostgreSQL tests).
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1 \
    || missing+=(postgresql)
if [ ${#missing[@]} -gt 0 ]; then
    say "installing ${missing[*]}"
    command -v apt-get >/dev/null 2>&1 || die "missing ${missing[*]} and no apt-get to install them: install them by hand"
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null 2>&1 || die "missing ${missing[*]}: run as root or install sudo"
        sudo="sudo"
    fi
    $sudo apt-get update -qq || die "apt-get update failed: cannot install ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" \
        || die "apt-get install ${missing[*]} failed"
fi

# --- Docker engine ---------------------------------------------------------------
command -v docker >/dev/null 2>&1 || die "the docker CLI is missing: install Docker Engine first"
docker info >/dev/null 2>&1 \
    || die "the Docker engine is unreachable ('docker info' fails): start it (systemctl start docker) or check DOCKER_HOST and your permissions"

# --- Rust ------------------------------------------------------------------------
command -v cargo >/dev/null 2>&1 || die "cargo is missing: install the Rust toolchain (rustup) first"

# --- Python grpcio: the independent client of the operator API --------------------
# Only for the test suite (tests/run.sh sets DROVER_SETUP_PYTHON=1). A venv of our own
# (never the system's site-packages), created once and reused: `DROVER_TEST_PYTHON`
# names its interpreter for the tests (tests/tests/security.rs).
venv="${DROVER_TEST_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/drover-tests/venv}"
if [ "${DROVER_SETUP_PYTHON:-0}" = 1 ]; then
    if ! "$venv/bin/python" -c 'import grpc' >/dev/null 2>&1; then
        command -v python3 >/dev/null 2>&1 || die "python3 is missing: install it (apt-get install python3 python3-venv)"
        say "creating a Python venv with grpcio in $venv"
        rm -rf "$venv"
        if ! python3 -m venv "$venv" >/dev/null 2>&1; then
            # Debian's python3 has venv without ensurepip until python3-venv is installed.
            command -v apt-get >/dev/null 2>&1 || die "python3 -m venv fails and there is no apt-get to install python3-venv"
            sudo=""
            [ "$(id -u)" -eq 0 ] || sudo="sudo"
            say "installing python3-venv"
            $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq python3-venv \
                || die "apt-get install python3-venv failed"
            rm -rf "$venv"
            python3 -m venv "$venv" || die "python3 -m venv $venv failed"
        fi
        "$venv/bin/python" -m pip install --quiet grpcio \
            || die "pip install grpcio failed (PyPI unreachable?)"
    fi
    export DROVER_TEST_PYTHON="$venv/bin/python"
fi

# --- a clean Debian for the package tests: debootstrap once, then reused -------------
# tests/tests/packages.rs installs the .deb packages into a container of this root
# filesystem (imported into Docker by the test). Built once (about 35 s from Debian's
# mirror) as a tar file in the cache, which stays until deleted; `DROVER_TEST_ROOTFS`
# names it for the tests.
rootfs="${DROVER_TEST_ROOTFS:-${XDG_CACHE_HOME:-$HOME/.cache}/drover-tests/debian-bookworm-minbase.tar}"
if [ "${DROVER_SETUP_ROOTFS:-0}" = 1 ]; then
    if [ ! -s "$rootfs" ]; then
        sudo=""
        [ "$(id -u)" -eq 0 ] || sudo="sudo"
        if ! command -v debootstrap >/dev/null 2>&1 && [ ! -x /usr/sbin/debootstrap ]; then
            command -v apt-get >/dev/null 2>&1 || die "debootstrap is missing and there is no apt-get to install it"
            say "installing debootstrap"
            $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq debootstrap \
                || die "apt-get install debootstrap failed"
        fi
        say "building a minimal Debian bookworm root filesystem in $rootfs (once)"
        mkdir -p "$(dirname "$rootfs")"
        work=$(mktemp -d "${rootfs%.tar}.XXXXXX")
        $sudo debootstrap --variant=minbase bookworm "$work/root" "${DROVER_TEST_DEBIAN_MIRROR:-http://deb.debian.org/debian}" \
            >"$work/debootstrap.log" 2>&1 \
            || { tail -20 "$work/debootstrap.log" >&2; $sudo rm -rf "$work"; die "debootstrap failed (is the Debian mirror reachable?)"; }
        # No downloaded packages and no package lists, as in Debian's own container images:
        # installing a local .deb whose dependencies are met then never touches the network.
        $sudo chroot "$work/root" apt-get clean
        $sudo find "$work/root/var/lib/apt/lists" -type f -delete
        # Written under a temporary name and renamed: an interrupted run leaves no half file.
        $sudo tar -C "$work/root" --numeric-owner -cf "$work/rootfs.tar" . \
            && $sudo chmod 0644 "$work/rootfs.tar" && $sudo mv "$work/rootfs.tar" "$rootfs" \
            || { $sudo rm -rf "$work"; die "cannot write $rootfs"; }
        $sudo rm -rf "$work"
    fi
    export DROVER_TEST_ROOTFS="$rootfs"
fi
