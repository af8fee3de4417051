# Shared by tests/run.sh and tests/demo.sh, which source it from the workspace root:
# installs what the end-to-end tests and the demo need on a Debian machine with Docker
# (only what is missing), and checks that the Docker engine and cargo are usable.
# Defines `say` and `die` for the script that sources it.

say() { printf '==> %s\n' "$*"; }
die() { printf '%s: %s\n' "$0" "$*" >&2; exit 1; }

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

# --- Rust ------------------------------------------------------------------------
command -v cargo >/dev/null 2>&1 || die "cargo is missing: install the Rust toolchain (rustup) first"
