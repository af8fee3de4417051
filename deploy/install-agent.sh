#!/usr/bin/env bash
# Installs drover-agent on this host: binary, fleet CA certificate, join token, config,
# systemd unit; enables and starts it. Idempotent: run it again to upgrade the binary; an
# existing config is kept unless --force-config. Prints every action it takes, never the
# token.
#
#   sudo deploy/install-agent.sh --binary ./drover-agent \
#        --controller https://controller:7070 --name web-1 --advertise 10.0.0.11 \
#        --ca-cert ca.crt --token "$TOKEN" --label role=web --label zone=a
#
# Options:
#   --binary PATH        the drover-agent executable to install (required)
#   --controller URL     controller to dial, https://HOST:PORT (required for a new config)
#   --name NAME          this host's name in Drover (required for a new config)
#   --advertise ADDR     address the load balancer reaches this host's services on
#   --label KEY=VALUE    host label for deploy selectors (repeatable)
#   --ca-cert FILE       the fleet CA certificate (the controller's /etc/drover/pki/ca.crt),
#                        installed as /etc/drover/ca.crt (0644)
#   --token TOKEN        one-time join token from `drover token create`, written to
#                        /etc/drover/agent.env (0600, read by systemd) as DROVER_JOIN_TOKEN;
#                        used only on the first start, while the agent has no certificate
#   --insecure-dev       allow an http:// controller: plaintext and unauthenticated, for a
#                        development machine only (writes insecure-dev = true)
#   --force-config       rewrite /etc/drover/agent.toml even if it exists
#   --root DIR           install under DIR instead of / (for packaging and tests)
#   --no-systemd         skip user creation and systemctl
#   -h, --help           this text
#
# The agent is started only when it can enroll or is enrolled: the CA certificate is in
# place and it has a join token or a certificate (/var/lib/drover-agent/agent.crt).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=""
binary=""
controller=""
name=""
advertise=""
labels=()
ca_cert=""
token=""
insecure_dev=0
force_config=0
systemd=1

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit "${1:-0}"; }
die() { echo "install-agent: $*" >&2; exit 1; }
say() { echo "install-agent: $*"; }
warn() { echo "install-agent: warning: $*" >&2; }

while [ $# -gt 0 ]; do
  case "$1" in
    --binary) binary=$2; shift 2 ;;
    --controller) controller=$2; shift 2 ;;
    --name) name=$2; shift 2 ;;
    --advertise) advertise=$2; shift 2 ;;
    --label) labels+=("$2"); shift 2 ;;
    --ca-cert) ca_cert=$2; shift 2 ;;
    --token) token=$2; shift 2 ;;
    --insecure-dev) insecure_dev=1; shift ;;
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
if [ -n "$ca_cert" ]; then
  [ -r "$ca_cert" ] || die "--ca-cert $ca_cert is not a readable file"
  grep -q -- "-----BEGIN CERTIFICATE-----" "$ca_cert" \
    || die "--ca-cert $ca_cert holds no PEM certificate (copy the controller's /etc/drover/pki/ca.crt)"
fi
if [ -n "$controller" ]; then
  case "$controller" in
    https://*) [ "$insecure_dev" = 0 ] || die "--insecure-dev needs an http:// controller, not $controller" ;;
    http://*) [ "$insecure_dev" = 1 ] \
      || die "--controller $controller is plaintext: use https:// (or --insecure-dev on a development machine)" ;;
    *) die "--controller $controller: use an https:// URL, e.g. https://controller:7070" ;;
  esac
fi
for l in ${labels[@]+"${labels[@]}"}; do
  case "$l" in *=*) ;; *) die "invalid --label $l: expected key=value" ;; esac
done
if [ -n "$token" ] && ! [[ $token =~ ^drj1\.[A-Za-z0-9]+\.[A-Za-z0-9]+$ ]]; then
  # Never echo it: it may be some other secret pasted by mistake.
  die "--token is not a join token (drj1.<id>.<secret>): create one with \`drover token create\` on the controller"
fi

bin_dst="$root/usr/local/bin/drover-agent"
etc="$root/etc/drover"
cfg_dst="$etc/agent.toml"
ca_dst="$etc/ca.crt"
env_dst="$etc/agent.env"
unit_dst="$root/etc/systemd/system/drover-agent.service"
cert_path="$root/var/lib/drover-agent/agent.crt"

install -d -m 0755 "$root/usr/local/bin" "$root/etc/systemd/system"
install -d -m 0750 "$etc"

if [ -f "$bin_dst" ] && cmp -s "$binary" "$bin_dst"; then
  say "binary $bin_dst is up to date"
else
  install -m 0755 "$binary" "$bin_dst.new" && mv -f "$bin_dst.new" "$bin_dst"
  say "installed $bin_dst ($("$bin_dst" --version))"
fi

if [ -n "$ca_cert" ]; then
  if [ -f "$ca_dst" ] && cmp -s "$ca_cert" "$ca_dst"; then
    say "CA certificate $ca_dst is up to date"
  else
    install -m 0644 "$ca_cert" "$ca_dst.new" && mv -f "$ca_dst.new" "$ca_dst"
    say "installed CA certificate $ca_dst"
  fi
fi

if [ -n "$token" ]; then
  if [ -f "$env_dst" ] && [ "$(cat "$env_dst")" = "DROVER_JOIN_TOKEN=$token" ]; then
    say "join token in $env_dst is up to date"
  else
    (umask 077; printf 'DROVER_JOIN_TOKEN=%s\n' "$token" >"$env_dst.new")
    chmod 0600 "$env_dst.new" && mv -f "$env_dst.new" "$env_dst"
    say "wrote join token to $env_dst (0600; used only while the agent has no certificate)"
  fi
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
    [ "$insecure_dev" = 1 ] && echo "insecure-dev = true"
    echo 'log-format = "json"'
    if [ ${#labels[@]} -gt 0 ]; then
      echo
      echo "[labels]"
      for l in "${labels[@]}"; do
        echo "${l%%=*} = \"${l#*=}\""
      done
    fi
  } >"$tmp"
  install -m 0640 "$tmp" "$cfg_dst" && rm -f "$tmp"
  say "wrote config $cfg_dst"
fi

# Can the agent start? (It exits 64 without a CA certificate, or without both a
# certificate and a join token.)
ready=1
if ! grep -q '^insecure-dev = true' "$cfg_dst"; then
  if [ ! -f "$ca_dst" ]; then
    warn "no fleet CA certificate at $ca_dst: copy the controller's /etc/drover/pki/ca.crt there (or rerun with --ca-cert FILE)"
    ready=0
  fi
  if [ ! -f "$cert_path" ] && [ ! -f "$env_dst" ] && ! grep -q '^token' "$cfg_dst"; then
    warn "no join token and no certificate yet: create a token with \`drover token create\` on the controller and rerun with --token TOKEN"
    ready=0
  fi
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
  chgrp drover-agent "$etc" "$cfg_dst" && say "config readable by drover-agent"
  systemctl daemon-reload
  systemctl enable drover-agent.service >/dev/null 2>&1 && say "enabled drover-agent.service"
  if [ "$ready" = 1 ]; then
    systemctl restart drover-agent.service && say "started drover-agent.service"
    systemctl --no-pager --lines=0 status drover-agent.service || true
  else
    say "not starting drover-agent.service until the warnings above are fixed (then rerun this script)"
  fi
else
  say "skipped user creation and systemctl (--no-systemd)"
fi
