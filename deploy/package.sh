#!/usr/bin/env bash
# Builds Drover's release artifacts from this workspace, into target/packages/:
#
#   drover_<version>_amd64.deb          the controller and CLI (`drover`), its unit,
#                                       completions and man pages
#   drover-agent_<version>_amd64.deb    the agent, its unit, a system user, and
#                                       `drover-agent-join` to enroll the host
#   drover-<version>-x86_64-linux.tar.gz  the same static binaries with the units, the
#                                       example configs and install-agent.sh, for hosts
#                                       without dpkg
#
#   deploy/package.sh              # build the static binaries (if needed), then package
#   deploy/package.sh --no-build   # package the binaries already built
#
# The binaries are statically linked (glibc, crt-static): they need no shared library on
# the host; the script refuses a binary that `ldd` sees as dynamic. Packages are built with
# dpkg-deb alone (no debhelper), owned by root whoever runs the script.
set -euo pipefail
umask 022 # the modes inside the packages do not depend on the caller's

cd "$(dirname "${BASH_SOURCE[0]}")/.."
target=x86_64-unknown-linux-gnu
build=1

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit "${1:-0}"; }
die() { echo "package: $*" >&2; exit 1; }
say() { echo "package: $*"; }

while [ $# -gt 0 ]; do
  case "$1" in
    --no-build) build=0; shift ;;
    -h|--help) usage 0 ;;
    *) echo "package: unknown option $1" >&2; usage 2 ;;
  esac
done

command -v dpkg-deb >/dev/null || die "dpkg-deb is missing: apt-get install dpkg"
version=$(awk -F'"' '/^\[workspace.package\]/ { p = 1 } p && /^version *=/ { print $2; exit }' Cargo.toml)
[ -n "$version" ] || die "no version in Cargo.toml's [workspace.package]"
target_dir=${CARGO_TARGET_DIR:-target}
bin_dir="$target_dir/$target/release"
out="$target_dir/packages"

if [ "$build" = 1 ]; then
  say "building the static release binaries"
  RUSTFLAGS='-C target-feature=+crt-static' \
    cargo build --release --locked --target "$target" -p drover-controller -p drover-agent
fi
for b in drover drover-agent; do
  [ -x "$bin_dir/$b" ] || die "$bin_dir/$b is missing: run without --no-build"
  # ldd says "statically linked" (static-pie) or "not a dynamic executable".
  if ldd "$bin_dir/$b" 2>&1 | grep -q '=>'; then
    die "$bin_dir/$b is dynamically linked: build it with RUSTFLAGS='-C target-feature=+crt-static'"
  fi
done

# Everything is assembled in a directory of this run, and each artifact renamed into
# place when complete: a test reading the previous one never sees half a file.
mkdir -p "$out"
stage=$(mktemp -d "$out/.stage.XXXXXX")
trap 'rm -rf "$stage"' EXIT

# Copies a unit from deploy/, running the packaged binary instead of /usr/local/bin's.
unit() { sed 's|/usr/local/bin/|/usr/bin/|g' "deploy/$1" >"$2/$1" && chmod 0644 "$2/$1"; }

# Writes DEBIAN/control for package $1 into root $2; $3 = Depends, $4 = Recommends,
# $5 = one-line summary, stdin = the long description.
control() {
  local size
  size=$(du -sk --exclude=DEBIAN "$2" | cut -f1)
  {
    echo "Package: $1"
    echo "Version: $version"
    echo "Architecture: amd64"
    echo "Maintainer: Drover maintainers <drover@example.org>"
    echo "Installed-Size: $size"
    [ -z "$3" ] || echo "Depends: $3"
    [ -z "$4" ] || echo "Recommends: $4"
    echo "Section: admin"
    echo "Priority: optional"
    echo "Homepage: https://github.com/drover/drover"
    echo "Description: $5"
    sed 's/^$/./; s/^/ /'
  } >"$2/DEBIAN/control"
}

# Copies the maintainer scripts of package $1 into root $2 and lists its conffiles.
scripts() {
  local s
  for s in postinst prerm postrm; do
    install -m 0755 "deploy/debian/$1.$s" "$2/DEBIAN/$s"
  done
  (cd "$2" && find etc -type f -printf '/%p\n' 2>/dev/null | sort) >"$2/DEBIAN/conffiles"
  [ -s "$2/DEBIAN/conffiles" ] || rm -f "$2/DEBIAN/conffiles"
}

# Shared by both packages: license and where the README lives.
doc() {
  install -d -m 0755 "$2/usr/share/doc/$1"
  printf 'Drover %s, %s\nLicense: Apache-2.0\nDocumentation: the README of https://github.com/drover/drover\n' \
    "$version" "$1" >"$2/usr/share/doc/$1/copyright"
  chmod 0644 "$2/usr/share/doc/$1/copyright"
}

# --- drover: controller and CLI -------------------------------------------------
r="$stage/drover"
install -d -m 0755 "$r/DEBIAN" "$r/usr/bin" "$r/lib/systemd/system" "$r/etc/drover" \
  "$r/usr/share/man/man1" "$r/usr/share/bash-completion/completions" \
  "$r/usr/share/zsh/vendor-completions" "$r/usr/share/fish/vendor_completions.d"
install -m 0755 "$bin_dir/drover" "$r/usr/bin/drover"
unit drover.service "$r/lib/systemd/system"
install -m 0644 deploy/drover.example.toml "$r/etc/drover/drover.example.toml"
"$bin_dir/drover" completions bash >"$r/usr/share/bash-completion/completions/drover"
"$bin_dir/drover" completions zsh >"$r/usr/share/zsh/vendor-completions/_drover"
"$bin_dir/drover" completions fish >"$r/usr/share/fish/vendor_completions.d/drover.fish"
"$bin_dir/drover" man --out "$r/usr/share/man/man1" 2>/dev/null
gzip -9n "$r"/usr/share/man/man1/*.1
find "$r/usr/share" -type f -exec chmod 0644 {} +
doc drover "$r"
control drover "$r" "" "" "Drover controller: zero-downtime container rollouts across a fleet" <<'EOF'
drover serve is the controller: agents on every host dial in over mutual TLS,
and it rolls a new container version across them batch by batch, draining each
batch on HAProxy first. Every other drover subcommand (deploy, status, hosts,
history, rollback, ...) is a client of it.

Set up the fleet CA with `drover ca init`, then `systemctl enable --now drover`.
EOF
scripts drover "$r"

# --- drover-agent ------------------------------------------------------------------
r="$stage/drover-agent"
install -d -m 0755 "$r/DEBIAN" "$r/usr/bin" "$r/usr/sbin" "$r/lib/systemd/system" \
  "$r/etc/drover" "$r/usr/share/drover-agent"
install -m 0755 "$bin_dir/drover-agent" "$r/usr/bin/drover-agent"
unit drover-agent.service "$r/lib/systemd/system"
install -m 0755 deploy/install-agent.sh "$r/usr/share/drover-agent/install-agent.sh"
install -m 0755 deploy/debian/drover-agent-join "$r/usr/sbin/drover-agent-join"
install -m 0644 deploy/agent.example.toml "$r/etc/drover/agent.example.toml"
doc drover-agent "$r"
control drover-agent "$r" "passwd" "docker.io | docker-ce" \
  "Drover agent: swaps containers on this host on the controller's command" <<'EOF'
drover-agent dials out to the Drover controller over one long-lived mutual-TLS
gRPC stream (no inbound port) and, on command, pulls an image and swaps the
running container on the local Docker engine.

Enroll the host with `drover-agent-join --controller URL --name NAME
--ca-cert ca.crt --token-file FILE`: it writes /etc/drover/agent.toml and
starts the agent.
EOF
scripts drover-agent "$r"

for p in drover drover-agent; do
  dpkg-deb --root-owner-group -Zgzip --build "$stage/$p" "$stage/${p}_${version}_amd64.deb" >/dev/null
done

# --- the tarball: static binaries next to install-agent.sh and the units -------------
t="$stage/tar/drover-$version"
install -d -m 0755 "$t"
install -m 0755 "$bin_dir/drover" "$bin_dir/drover-agent" deploy/install-agent.sh "$t/"
install -m 0644 deploy/drover.service deploy/drover-agent.service \
  deploy/drover.example.toml deploy/agent.example.toml "$t/"
tar -C "$stage/tar" --owner=0 --group=0 --numeric-owner -czf \
  "$stage/drover-$version-x86_64-linux.tar.gz" "drover-$version"

for f in "drover_${version}_amd64.deb" "drover-agent_${version}_amd64.deb" \
  "drover-$version-x86_64-linux.tar.gz"; do
  mv -f "$stage/$f" "$out/$f"
  say "built $out/$f"
done
