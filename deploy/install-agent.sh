#!/usr/bin/env bash
# Installs drover-agent on this host: binary, fleet CA certificate, join token, config,
# systemd unit; enables and starts it. Idempotent: run it again to upgrade the binary; an
# existing config is kept unless --force-config. Prints every action it takes, never the
# token. The drover-agent package runs it as `drover-agent-join` (--packaged).
#
#   sudo deploy/install-agent.sh --binary ./drover-agent \
#        --controller https://controller:7070 --name web-1 --advertise 10.0.0.11 \
#        --ca-cert ca.crt --token-file join-token --label role=web --label zone=a
#
# Options:
#   --binary PATH        the drover-agent executable to install (required unless --packaged)
#   --packaged           the drover-agent package installed the binary (/usr/bin) and the
#                        unit (/lib/systemd/system): configure, enroll and start only; with
#                        no config and no --controller, only the user and directories
#   --controller URL     controller to dial, https://HOST:PORT (required for a new config)
#   --name NAME          this host's name in Drover (required for a new config)
#   --advertise ADDR     address the load balancer reaches this host's services on
#   --label KEY=VALUE    host label for deploy selectors (repeatable)
#   --ca-cert FILE       the fleet CA certificate (the controller's /etc/drover/pki/ca.crt),
#                        installed as /etc/drover/ca.crt (0644)
#   --token-file FILE    file holding the one-time join token from `drover token create`,
#                        copied to /etc/drover/agent.env (0600, read by systemd) as
#                        DROVER_JOIN_TOKEN; used only on the first start, while the agent
#                        has no certificate. Delete FILE afterwards
#   --token TOKEN        the token itself (visible in the process list: prefer --token-file)
#   --insecure-dev       allow an http:// controller: plaintext and unauthenticated, for a
#                        development machine only (writes insecure-dev = true)
#   --force-config       rewrite /etc/drover/agent.toml even if it exists
#   --root DIR           install under DIR instead of / (for packaging and tests)
#   --no-systemd         skip user creation and systemctl
#   --no-start           create the user and directories, but neither enable nor start the
#                        agent (what the package does on install and upgrade)
#   -h, --help           this text
#
# The agent is started only when it can enroll or is enrolled: the CA certificate is in
# place and it has a join token or a certificate (/var/lib/drover-agent/agent.crt).
# Where systemd is not running (a container, a chroot), systemctl is not called beyond
# `enable` (which works offline); start the agent as the unit's ExecStart= says.
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
token_file=""
packaged=0
insecure_dev=0
force_config=0
systemd=1
start=1

prog=install-agent
usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit "${1:-0}"; }
die() { echo "$prog: $*" >&2; exit 1; }
say() { echo "$prog: $*"; }
warn() { echo "$prog: warning: $*" >&2; }

while [ $# -gt 0 ]; do
  case "$1" in
    --binary) binary=$2; shift 2 ;;
    --controller) controller=$2; shift 2 ;;
    --name) name=$2; shift 2 ;;
    --advertise) advertise=$2; shift 2 ;;
    --label) labels+=("$2"); shift 2 ;;
    --ca-cert) ca_cert=$2; shift 2 ;;
    --token) token=$2; shift 2 ;;
    --token-file) token_file=$2; shift 2 ;;
    --packaged) packaged=1; prog=drover-agent-join; shift ;;
    --insecure-dev) insecure_dev=1; shift ;;
    --root) root=$2; shift 2 ;;
    --force-config) force_config=1; shift ;;
    --no-systemd) systemd=0; shift ;;
    --no-start) start=0; shift ;;
    -h|--help) usage 0 ;;
    *) echo "$prog: unknown option $1" >&2; usage 2 ;;
  esac
done

if [ "$packaged" = 1 ]; then
  [ -z "$binary" ] || die "--binary and --packaged exclude each other: the package installed /usr/bin/drover-agent"
  binary="$root/usr/bin/drover-agent"
fi
[ -n "$binary" ] || die "--binary PATH is required (build it with: cargo build --release -p drover-agent)"
[ -x "$binary" ] || die "$binary is not an executable file"
"$binary" --version >/dev/null 2>&1 || die "$binary does not run on this host (wrong architecture or libc?)"
if [ -n "$token_file" ]; then
  [ -z "$token" ] || die "give the join token once: --token or --token-file, not both"
  [ -f "$token_file" ] && [ -r "$token_file" ] || die "--token-file $token_file is not a readable file"
  token=$(head -n 1 "$token_file" | tr -d '[:space:]')
  [ -n "$token" ] || die "--token-file $token_file is empty: write the output of \`drover token create\` into it"
fi
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
  what="--token"
  [ -z "$token_file" ] || what="--token-file $token_file"
  die "$what holds no join token (drj1.<id>.<secret>): create one with \`drover token create\` on the controller"
fi

etc="$root/etc/drover"
cfg_dst="$etc/agent.toml"
ca_dst="$etc/ca.crt"
env_dst="$etc/agent.env"
state_dir="$root/var/lib/drover-agent"
cert_path="$state_dir/agent.crt"
# The package ships the binary and the unit itself.
bin_dst="$root/usr/local/bin/drover-agent"
unit_dst="$root/etc/systemd/system/drover-agent.service"

install -d -m 0750 "$etc"

if [ "$packaged" = 0 ]; then
  install -d -m 0755 "$root/usr/local/bin" "$root/etc/systemd/system"
  if [ -f "$bin_dst" ] && cmp -s "$binary" "$bin_dst"; then
    say "binary $bin_dst is up to date"
  else
    install -m 0755 "$binary" "$bin_dst.new" && mv -f "$bin_dst.new" "$bin_dst"
    say "installed $bin_dst ($("$bin_dst" --version))"
  fi
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

configured=1
if [ -f "$cfg_dst" ] && [ "$force_config" = 0 ]; then
  say "kept existing config $cfg_dst (use --force-config to rewrite it)"
elif [ "$packaged" = 1 ] && [ -z "$controller$name" ]; then
  # The package's own set-up (postinst): nothing to enroll with yet.
  configured=0
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
ready=$configured
if [ "$configured" = 1 ] && ! grep -q '^insecure-dev = true' "$cfg_dst"; then
  if [ ! -f "$ca_dst" ]; then
    warn "no fleet CA certificate at $ca_dst: copy the controller's /etc/drover/pki/ca.crt there (or rerun with --ca-cert FILE)"
    ready=0
  fi
  if [ ! -f "$cert_path" ] && [ ! -f "$env_dst" ] && ! grep -q '^token' "$cfg_dst"; then
    warn "no join token and no certificate yet: create a token with \`drover token create\` on the controller and rerun with --token-file FILE"
    ready=0
  fi
fi

if [ "$packaged" = 0 ]; then
  if [ -f "$unit_dst" ] && cmp -s "$here/drover-agent.service" "$unit_dst"; then
    say "unit $unit_dst is up to date"
  else
    install -m 0644 "$here/drover-agent.service" "$unit_dst"
    say "installed unit $unit_dst"
  fi
fi

if [ "$systemd" = 0 ]; then
  say "skipped user creation and systemctl (--no-systemd)"
  exit 0
fi

if ! id drover-agent >/dev/null 2>&1; then
  useradd --system --user-group --no-create-home --home-dir /var/lib/drover-agent \
    --shell /usr/sbin/nologin --comment "Drover agent" drover-agent
  say "created system user drover-agent"
fi
if getent group docker >/dev/null && ! id -nG drover-agent | grep -qw docker; then
  usermod -aG docker drover-agent
  say "added drover-agent to group docker"
fi
# The agent's certificate and key; systemd's StateDirectory= keeps the same owner and mode.
install -d -m 0700 -o drover-agent -g drover-agent "$state_dir"
chgrp drover-agent "$etc"
if [ "$configured" = 0 ]; then
  say "not enrolled yet: run drover-agent-join --controller https://CONTROLLER:7070 --name NAME --ca-cert ca.crt --token-file FILE"
  exit 0
fi
chgrp drover-agent "$cfg_dst" && say "config readable by drover-agent"

if [ "$start" = 0 ]; then
  say "left drover-agent.service as it was (--no-start)"
elif [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
  systemctl daemon-reload
  systemctl enable drover-agent.service >/dev/null 2>&1 && say "enabled drover-agent.service"
  if [ "$ready" = 1 ]; then
    systemctl restart drover-agent.service && say "started drover-agent.service"
    systemctl --no-pager --lines=0 status drover-agent.service || true
  else
    say "not starting drover-agent.service until the warnings above are fixed (then rerun this script)"
  fi
elif command -v systemctl >/dev/null 2>&1; then
  # A chroot or an image being built: enabling works offline, starting does not.
  systemctl enable drover-agent.service >/dev/null 2>&1 && say "enabled drover-agent.service"
  if [ "$ready" = 1 ]; then
    say "systemd is not running here: drover-agent.service starts at boot"
  else
    say "systemd is not running here: drover-agent.service starts at boot, once the warnings above are fixed"
  fi
else
  say "no systemd here: run the agent as drover-agent.service's ExecStart= does (as user drover-agent, with the environment of $env_dst)"
fi
