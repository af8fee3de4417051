#!/usr/bin/env bash
# Installs drover-agent on this host: binary, config, systemd unit; enables and starts it.
# Idempotent: run it again to upgrade the binary; an existing config is kept unless
# --force-config. Prints every action it takes.
#
#   sudo deploy/install-agent.sh --binary ./drover-agent \
#        --controller http://controller:7070 --name web-1 --advertise 10.0.0.11 \
#        --label role=web --label zone=a
#
# --root DIR installs under DIR instead of / (for packaging and tests); --no-systemd
# skips user creation and systemctl.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=""
binary=""
controller=""
name=""
advertise=""
labels=()
force_config=0
systemd=1

usage() { sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
die() { echo "install-agent: $*" >&2; exit 1; }
say() { echo "install-agent: $*"; }

while [ $# -gt 0 ]; do
  case "$1" in
    --binary) binary=$2; shift 2 ;;
    --controller) controller=$2; shift 2 ;;
    --name) name=$2; shift 2 ;;
    --advertise) advertise=$2; shift 2 ;;
    --label) labels+=("$2"); shift 2 ;;
    --root) root=$2; shift 2 ;;
    --force-config) force_config=1; shift ;;
    --no-systemd) systemd=0; shift ;;
    -h|--help) usage 0 ;;
    *) echo "install-agent: unknown option $1" >&2; usage 2 ;;
  esac
done

[ -n "$binary" ] || die "--binary PATH is required (build it with: cargo build --release -p drover-agent)"
[ -x "$binary" ] || die "$binary is not an executable file"
"$binary" --version >/dev/null 2>&1 || die "$binary does not run on this host (wrong architecture or libc?)"

bin_dst="$root/usr/local/bin/drover-agent"
cfg_dst="$root/etc/drover/agent.toml"
unit_dst="$root/etc/systemd/system/drover-agent.service"

install -d -m 0755 "$root/usr/local/bin" "$root/etc/systemd/system"
install -d -m 0750 "$root/etc/drover"

if [ -f "$bin_dst" ] && cmp -s "$binary" "$bin_dst"; then
  say "binary $bin_dst is up to date"
else
  install -m 0755 "$binary" "$bin_dst.new" && mv -f "$bin_dst.new" "$bin_dst"
  say "installed $bin_dst ($("$bin_dst" --version))"
fi

if [ -f "$cfg_dst" ] && [ "$force_config" = 0 ]; then
  say "kept existing config $cfg_dst (use --force-config to rewrite it)"
else
  [ -n "$controller" ] || die "--controller URL is required to write $cfg_dst"
  [ -n "$name" ] || die "--name NAME is required to write $cfg_dst"
  tmp=$(mktemp)
  {
    echo "# Written by install-agent.sh; every key is documented in agent.example.toml."
    echo "controller = \"$controller\""
    echo "name = \"$name\""
    [ -n "$advertise" ] && echo "advertise = \"$advertise\""
    echo 'log-format = "json"'
    if [ ${#labels[@]} -gt 0 ]; then
      echo
      echo "[labels]"
      for l in "${labels[@]}"; do
        case "$l" in *=*) ;; *) rm -f "$tmp"; die "invalid --label $l: expected key=value" ;; esac
        echo "${l%%=*} = \"${l#*=}\""
      done
    fi
  } >"$tmp"
  install -m 0640 "$tmp" "$cfg_dst" && rm -f "$tmp"
  say "wrote config $cfg_dst"
fi

if [ -f "$unit_dst" ] && cmp -s "$here/drover-agent.service" "$unit_dst"; then
  say "unit $unit_dst is up to date"
else
  install -m 0644 "$here/drover-agent.service" "$unit_dst"
  say "installed unit $unit_dst"
fi

if [ "$systemd" = 1 ]; then
  if ! id drover-agent >/dev/null 2>&1; then
    useradd --system --no-create-home --shell /usr/sbin/nologin drover-agent
    say "created system user drover-agent"
  fi
  if getent group docker >/dev/null && ! id -nG drover-agent | grep -qw docker; then
    usermod -aG docker drover-agent
    say "added drover-agent to group docker"
  fi
  chgrp drover-agent "$cfg_dst" && say "config readable by drover-agent"
  systemctl daemon-reload
  systemctl enable drover-agent.service >/dev/null 2>&1 && say "enabled drover-agent.service"
  systemctl restart drover-agent.service && say "started drover-agent.service"
  systemctl --no-pager --lines=0 status drover-agent.service || true
else
  say "skipped user creation and systemctl (--no-systemd)"
fi
