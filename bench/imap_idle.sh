#!/usr/bin/env bash
# Held IMAP sessions: SESSIONS IMAPS sessions (TLS, logged in, INBOX selected, IDLE)
# spread over 100 users, against Agora and then against Dovecot, both with one ECDSA
# P-256 certificate, reporting each server's memory per idle session (PSS growth /
# sessions). Dovecot runs as an administrator with many users runs it: imap-login with
# service_count = 0 and a high client_limit (one login process per core holds every
# TLS session), and imap_hibernate_timeout = 5s so that idling sessions leave their
# imap process for the imap-hibernate process. With BIG, Agora alone then holds BIG
# sessions (from several loopback source addresses: one has only ~28,000 ports).
#   usage: bench/imap_idle.sh [agora sessions=10000] [dovecot sessions=10000] [BIG]
#   (0 sessions skips that server)
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
N=${1:-10000}; ND=${2:-10000}; BIG=${3:-}; USERS=100

command -v dovecot >/dev/null || { apt-get update -qq && apt-get install -y -qq dovecot-imapd >/dev/null; }
# AGORA_BIN: a built agora to measure instead of building the release one.
if [[ -n ${AGORA_BIN:-} ]]; then bin=$(realpath "$AGORA_BIN"); else cargo build --release -q -p agora; bin=$PWD/target/release/agora; fi
work=$(mktemp -d); chmod 755 "$work"
# KEEP=1 leaves the servers' logs and configurations behind.
cleanup() { kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; [[ -n ${KEEP:-} ]] || rm -rf "$work"; }
trap cleanup EXIT
# Descriptors for every session on each side (root may raise its hard limit).
ulimit -Hn 1048576 2>/dev/null || true
ulimit -n "$(ulimit -Hn)"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
  -subj /CN=mx.example.org -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null
chmod 644 "$work/key.pem"
start_quiet_dns 29053

agora_run() {  # agora_run SESSIONS
  local n=$1 dir=$work/agora-$1
  mkdir -p "$dir"
  cat > "$dir/agora.toml" <<CONF
[server]
hostname = "mx.example.org"
domain = "example.org"
[tls]
cert = "$work/cert.pem"
key = "$work/key.pem"
[limits]
max_connections = $((n + 100))
max_connections_per_ip = $((n + 100))
max_connections_per_network = $((n + 100))
max_sessions_per_user = $((n / USERS + 10))
[listeners.imaps]
max_connections = $((n + 100))
CONF
  start_agora "$bin" "$dir" --port-offset 30000 --bind 127.0.0.1
  add_users "$bin" "$dir" pw $(seq -f "user%g@example.org" 1 $USERS)
  echo "== Agora (pid $AGORA_PID), $n sessions"
  python3 bench/imap_idle.py 127.0.0.1 30993 "$USERS" "$n" "$AGORA_PID"
  kill "$AGORA_PID"; wait "$AGORA_PID" 2>/dev/null || true
}
[[ $N -gt 0 ]] && agora_run "$N"

if [[ $ND -gt 0 ]]; then
# --- Dovecot ---
# Every imap process (one uid for all virtual users) keeps an inotify instance until
# it hibernates, and hibernation needs it: raise the per-user limit of 128 as Dovecot
# sites with many users do.
old_instances=$(cat /proc/sys/fs/inotify/max_user_instances)
sysctl -q -w fs.inotify.max_user_instances=$((ND + 1000)) ||
  echo "warning: cannot raise fs.inotify.max_user_instances: Dovecot's sessions past 128 will not hibernate" >&2
d=$work/dovecot
mkdir -p "$d/run" "$d/state" "$d/mail"
: > "$d/passwd"
for i in $(seq 1 $USERS); do echo "user$i@example.org:{PLAIN}pw" >> "$d/passwd"; done
chown -R nobody:nogroup "$d/mail"
{ dovecot_conf "$d" imap; cat <<CONF
ssl = required
ssl_cert = <$work/cert.pem
ssl_key = <$work/key.pem
auth_mechanisms = plain
mail_max_userip_connections = $((ND / USERS + 10))
default_process_limit = $((ND + 100))
default_client_limit = $((2 * ND + 100))
imap_hibernate_timeout = 5s
service imap-login {
  service_count = 0
  process_min_avail = $(nproc)
  client_limit = $((2 * ND + 100))
  vsz_limit = 2G
  inet_listener imap {
    port = 0
  }
  inet_listener imaps {
    port = 31993
    ssl = yes
  }
}
service imap {
  process_limit = $((ND + 100))
  unix_listener imap-master {
    user = \$default_internal_user
  }
  extra_groups = \$default_internal_group
}
service imap-hibernate {
  client_limit = $((ND + 100))
  unix_listener imap-hibernate {
    mode = 0660
    group = \$default_internal_group
  }
}
CONF
} > "$d/dovecot.conf"
dovecot -F -c "$d/dovecot.conf" &
sleep 2
echo "== Dovecot, $ND sessions"
HIBERNATE=1 python3 bench/imap_idle.py 127.0.0.1 31993 "$USERS" "$ND" dovecot
kill %?dovecot 2>/dev/null || true
dovecot -c "$d/dovecot.conf" stop 2>/dev/null || true
sysctl -q -w fs.inotify.max_user_instances="$old_instances" 2>/dev/null || true
sleep 2
fi

[[ -n $BIG ]] && agora_run "$BIG"
exit 0
